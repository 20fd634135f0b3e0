"""The client's side of the serving protocol: Triton gRPC calls to the `media`, `ask` and `stats`
models (the protocol: vinci_edge/serve/server.py), shaped by what the server says of each model.

    link = ServerLink("127.0.0.1:8001", camera="dock-3")
    link.media("start", 0.0)                         # -> {"ok": true, ...}
    link.media("frame", 1.0, frame=rgb)              # one request at a time, in stream order
    for piece, final in link.ask("Is the door open?"): ...   # decoupled: pieces, then the final JSON
    link.stats()                                      # -> {"streams": {...}, "limit": ...}

The models' configurations are read once per connection: a model with `max_batch_size > 0` takes
an explicit batch dimension of 1; a `media` model with a sequence batcher (a standalone Triton
repository, `vinci_edge.serve.repository`) gets the camera as Triton's sequence id (a number made
from the camera id when its CORRID control is an integer), with sequence_start on `start` and
sequence_end on `end`. Every failure to reach the server is a
`ServerUnavailable` (one line, no traceback); a model's own refusal comes back as its status JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from vinci_edge.errors import MissingDependencyError, VinciEdgeError

MEDIA, ASK, STATS = "media", "ask", "stats"
KINDS = ("start", "frame", "audio", "end")
CONNECT_TIMEOUT_S = 5.0  # a call that cannot reach the server gives up after this
MEDIA_TIMEOUT_S = 30.0  # a media request the server does not answer in this long: the server is lost


class ServerUnavailable(VinciEdgeError):
    """The server cannot be reached, or the connection broke; the message is one line."""


@dataclass(frozen=True)
class ModelShape:
    """What the client needs of one served model's configuration."""

    batched: bool  # max_batch_size > 0: inputs carry a leading batch dimension of 1
    sequence: bool  # a sequence batcher: requests carry the camera's sequence id
    numeric_id: bool  # its CORRID control is an integer: the id is `sequence_number(camera)`
    decoupled: bool

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        controls = config.get("sequence_batching", {}).get("control_input", [])
        kinds = [c for control in controls for c in control.get("control", [])]
        corrid = next((c for c in kinds if c.get("kind") == "CONTROL_SEQUENCE_CORRID"), {})
        return cls(
            batched=int(config.get("max_batch_size", 0)) > 0,
            sequence="sequence_batching" in config,
            numeric_id=corrid.get("data_type", "TYPE_STRING") != "TYPE_STRING",
            decoupled=bool(config.get("model_transaction_policy", {}).get("decoupled", False)),
        )


def sequence_number(camera: str) -> int:
    """A camera's sequence id as a non-zero 63-bit number (for a sequence batcher whose CORRID is
    an integer): the same camera always gets the same one."""
    digest = hashlib.sha256(camera.encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") & (2**63 - 1)) or 1


def grpc_url(url: str) -> str:
    """HOST:PORT as tritonclient's gRPC client takes it (a grpc:// prefix is dropped)."""
    text = url.strip()
    for prefix in ("grpc://", "http://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return text.rstrip("/")


def grpc_module() -> Any:
    """tritonclient's gRPC client, or a MissingDependencyError that says how to install it."""
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as exc:
        raise MissingDependencyError(
            f"talking to a server needs tritonclient[grpc] ({exc.name} is missing)",
            hint="pip install 'vinci-edge[serve]'",
        ) from None
    return grpcclient


def _bytes(text: str) -> np.ndarray:
    return np.array([text.encode("utf-8")], dtype=np.object_)


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _one_line(exc: BaseException) -> str:
    """A gRPC / Triton error as one short line."""
    text = getattr(exc, "message", None)
    text = text() if callable(text) else text
    text = str(text or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


class ServerLink:
    """One camera's connection to a server: `media` calls in order on one client, each question on
    a client of its own from a small pool (a gRPC client streams one request at a time)."""

    def __init__(self, url: str, camera: str) -> None:
        self.url = grpc_url(url)
        self.camera = camera
        self._media_client: Any = None
        self._shapes: dict[str, ModelShape] = {}
        self._idle: list[Any] = []  # clients for questions, not streaming
        self._lock = threading.Lock()

    # ---- connecting ---------------------------------------------------------------------------------
    def _client(self) -> Any:
        return grpc_module().InferenceServerClient(self.url)

    def connect(self) -> None:
        """Reach the server and read the models' configurations; ServerUnavailable if it cannot."""
        client = self._client()
        try:
            if not client.is_server_live(client_timeout=CONNECT_TIMEOUT_S):
                raise ServerUnavailable(f"the server at {self.url} is not live")
            shapes = {}
            for name in (MEDIA, ASK, STATS):
                config = client.get_model_config(name, as_json=True, client_timeout=CONNECT_TIMEOUT_S)
                shapes[name] = ModelShape.from_config(config.get("config", config))
        except ServerUnavailable:
            client.close()
            raise
        except Exception as exc:
            client.close()
            raise ServerUnavailable(f"cannot reach the server at {self.url}: {_one_line(exc)}") from None
        self.close()
        with self._lock:
            self._media_client, self._shapes = client, shapes

    @property
    def connected(self) -> bool:
        return self._media_client is not None

    def close(self) -> None:
        """Close every client (a question still streaming is cancelled)."""
        with self._lock:
            clients = [c for c in [self._media_client, *self._idle] if c is not None]
            self._media_client, self._idle = None, []
        for client in clients:
            with contextlib.suppress(Exception):  # closing a broken channel must not raise on the way out
                client.close()

    # ---- tensors ------------------------------------------------------------------------------------
    def _inputs(self, model: str, tensors: dict[str, tuple[np.ndarray, str]]) -> list[Any]:
        grpcclient = grpc_module()
        batched = self._shapes[model].batched
        inputs = []
        for name, (array, dtype) in tensors.items():
            data = array[None] if batched else array
            tensor = grpcclient.InferInput(name, list(data.shape), dtype)
            tensor.set_data_from_numpy(data)
            inputs.append(tensor)
        return inputs

    @staticmethod
    def _output_text(result: Any, name: str) -> str:
        value = result.as_numpy(name)
        return "" if value is None else _text(np.asarray(value).reshape(-1)[0])

    # ---- media --------------------------------------------------------------------------------------
    def media(
        self, kind: str, t: float, frame: np.ndarray | None = None, samples: np.ndarray | None = None
    ) -> dict[str, Any]:
        """One `media` request; its status JSON ({"ok": false, "reason": ...} is the server refusing).
        ServerUnavailable when the server cannot be reached."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        client = self._media_client
        if client is None:
            raise ServerUnavailable(f"not connected to {self.url}")
        tensors: dict[str, tuple[np.ndarray, str]] = {
            "camera": (_bytes(self.camera), "BYTES"),
            "kind": (_bytes(kind), "BYTES"),
            "t": (np.array([t], np.float64), "FP64"),
        }
        if frame is not None:
            tensors["frame"] = (np.ascontiguousarray(frame, np.uint8), "UINT8")
        if samples is not None:
            tensors["samples"] = (np.ascontiguousarray(samples, np.float32).reshape(-1), "FP32")
        shape = self._shapes[MEDIA]
        sequence = shape.sequence
        sequence_id = (sequence_number(self.camera) if shape.numeric_id else self.camera) if sequence else 0
        try:
            result = client.infer(
                MEDIA,
                self._inputs(MEDIA, tensors),
                sequence_id=sequence_id,
                sequence_start=sequence and kind == "start",
                sequence_end=sequence and kind == "end",
                client_timeout=MEDIA_TIMEOUT_S,
            )
        except Exception as exc:
            if _refused_by_model(exc):
                return {"ok": False, "reason": _one_line(exc)}
            raise ServerUnavailable(f"the server at {self.url} is unavailable: {_one_line(exc)}") from None
        status = _status(self._output_text(result, "status"))
        if sequence and kind == "start" and not status.get("ok", False):
            self._release(sequence_id, status)
        return status

    def _release(self, sequence_id: int | str, status: dict[str, Any]) -> None:
        """A refused `start` still opened a sequence in Triton's batcher: end it at once, so the
        slot is free for the next camera (not when the camera is already streaming: that
        sequence is live)."""
        if "already" in str(status.get("reason", "")):
            return
        tensors = {
            "camera": (_bytes(self.camera), "BYTES"),
            "kind": (_bytes("end"), "BYTES"),
            "t": (np.array([0.0], np.float64), "FP64"),
        }
        with contextlib.suppress(Exception):  # best effort: the batcher frees it when idle anyway
            self._media_client.infer(
                MEDIA,
                self._inputs(MEDIA, tensors),
                sequence_id=sequence_id,
                sequence_end=True,
                client_timeout=CONNECT_TIMEOUT_S,
            )

    def stats(self) -> dict[str, Any]:
        """The server's `stats` JSON."""
        client = self._media_client
        if client is None:
            raise ServerUnavailable(f"not connected to {self.url}")
        try:
            result = client.infer(
                STATS,
                self._inputs(STATS, {"what": (_bytes("all"), "BYTES")}),
                client_timeout=CONNECT_TIMEOUT_S,
            )
        except Exception as exc:
            raise ServerUnavailable(f"the server at {self.url} is unavailable: {_one_line(exc)}") from None
        return _status(self._output_text(result, "stats"))

    # ---- questions ----------------------------------------------------------------------------------
    def ask(
        self, question: str, max_new_tokens: int | None = None, until: float | None = None
    ) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """Stream one question's answer: (piece, None) for each piece of text, then ("", final),
        final being the answer's JSON or {"refused": reason}. ServerUnavailable if the stream breaks."""
        tensors: dict[str, tuple[np.ndarray, str]] = {
            "camera": (_bytes(self.camera), "BYTES"),
            "question": (_bytes(question), "BYTES"),
        }
        if max_new_tokens is not None:
            tensors["max_new_tokens"] = (np.array([max_new_tokens], np.int32), "INT32")
        if until is not None:
            tensors["until"] = (np.array([until], np.float64), "FP64")
        if not self.connected:
            raise ServerUnavailable(f"not connected to {self.url}")
        inputs = self._inputs(ASK, tensors)
        client = self._take_client()
        responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        clean = False
        try:
            client.start_stream(callback=lambda result, error: responses.put((result, error)))
            client.async_stream_infer(ASK, inputs)
            while True:
                result, error = responses.get()
                if error is not None:
                    if _refused_by_model(error):
                        clean = True
                        yield "", {"refused": _one_line(error)}
                        return
                    raise ServerUnavailable(f"the answer stream from {self.url} broke: {_one_line(error)}")
                final = self._output_text(result, "final")
                if final:
                    clean = True
                    yield "", _status(final)
                    return
                piece = self._output_text(result, "text")
                if piece:
                    yield piece, None
        except ServerUnavailable:
            raise
        except Exception as exc:
            raise ServerUnavailable(f"cannot ask {self.url}: {_one_line(exc)}") from None
        finally:
            self._give_back(client, clean)

    def _take_client(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._client()

    def _give_back(self, client: Any, clean: bool) -> None:
        """A client whose stream ended cleanly is kept for the next question; any other is closed."""
        try:
            client.stop_stream(cancel_requests=not clean)
        except Exception:
            clean = False
        with self._lock:
            if clean and self._media_client is not None and len(self._idle) < 4:
                self._idle.append(client)
                return
        with contextlib.suppress(Exception):
            client.close()


def _status(text: str) -> dict[str, Any]:
    """A status / final / stats JSON; something else is the server answering out of protocol."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"ok": False, "reason": f"the server sent something that is not JSON: {text[:120]!r}"}
    return value if isinstance(value, dict) else {"ok": False, "reason": f"unexpected status {value!r}"}


def _refused_by_model(exc: BaseException) -> bool:
    """An error the model itself returned (bad input, refused request), not a lost connection: the
    server is there and answered."""
    status = getattr(exc, "status", None)
    status = status() if callable(status) else status
    text = _one_line(exc)
    lost = (
        "UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "CANCELLED",
        "Socket closed",
        "failed to connect",
        "Broken pipe",
    )
    if status is not None and any(code in str(status) for code in lost[:3]):
        return False
    return not any(word.lower() in text.lower() for word in lost)
