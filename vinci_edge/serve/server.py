"""Live sessions for many cameras, served on NVIDIA Triton Inference Server through PyTriton.

    server = Server("engine/", ServeOptions(max_streams=8)).start()
    print(server.http_url, server.grpc_url, server.metrics_url)
    ...
    server.stop()      # new questions refused, queued ones answered, sessions closed

Five models are bound (the serving protocol, which vinci_edge.serve.client speaks too):

    vision  pixel_values FP32 [3,S,S] -> tokens FP32 [T,D]; dynamic batching (16, ~2 ms): the frames
            of every camera that arrive together run as one batch on the engine's one vision graph
    audio   mel FP32 [n_mels,3000] -> tokens FP32 [750,D]; dynamic batching (8)
    media   camera, kind (start|frame|audio|end), t, optional frame UINT8 [H,W,3] / samples FP32 [N]
            -> status BYTES [1] (JSON); one LiveSession per camera (vinci_edge.serve.streams)
    ask     camera, question, optional max_new_tokens INT32 [1] / until FP64 [1]; decoupled: the
            answer streams as `text` pieces, the last response's `final` holds the LiveAnswer's JSON
            or {"refused": reason}
    stats   -> stats BYTES [1]: JSON of every stream's counters, the limit, the batches run

media, ask and stats are not batched (max_batch_size 0): their tensors have exactly the shapes above.
`frame` is declared [-1,-1,-1] so that a frame of the wrong shape reaches the server and gets a
status with the reason rather than a transport error; a wrong dtype is refused by Triton itself.

PyTriton 0.7 cannot give `media` a sequence batcher: `ModelConfig` takes only a `DynamicBatcher`
(its config generator writes `dynamic_batching` and nothing else), and the proxy hands an inference
callable the request's inputs and parameters but not its correlation id. So `media` is keyed by its
`camera` input; a model repository for a stock Triton can use a real sequence batcher instead.

Inside the server each camera's session runs its vision and audio stages by calling the `vision`
and `audio` models over gRPC on loopback (vinci_edge.serve.triton_stages), and decodes with a
sibling of the engine's decoder: one ONNX Runtime session, a KV cache per camera.

Triton's Python-backend stub (the process that hands each model's requests to this one) comes with
two constraints. It is built with a pybind11 that predates numpy 2's dtype layout: with numpy 2 every
input arrives as its first element repeated and every output empty, so `start` refuses to run under
numpy 2 (PyTriton itself requires numpy < 2). And it links the system libpython: when the interpreter
running the server is another build of the same version, the models fail to load (`'_thread.RLock'
object has no attribute '_recursion_count'`); `start` puts this interpreter's own library directory
first on LD_LIBRARY_PATH, which the stub inherits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sysconfig
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vinci_edge import stages as st
from vinci_edge.errors import MissingDependencyError, VinciEdgeError
from vinci_edge.generation import GenerationConfig
from vinci_edge.live.answers import LiveOptions, QuestionRefused
from vinci_edge.live.session import LiveSession
from vinci_edge.manifest import TensorInfo
from vinci_edge.runtime.pipeline import Pipeline
from vinci_edge.serve.streams import Streams, refusal
from vinci_edge.serve.triton_stages import TritonStage, TritonStages

MEDIA_STAGES = (st.VISION, st.AUDIO)  # the stages served as batched models
TOKENS = "tokens"


class ServeError(VinciEdgeError):
    """The server cannot start or run as asked."""


class BadRequest(ValueError):
    """A request whose inputs cannot be read; its message goes back as the refusal's reason."""


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"  # the address every endpoint listens on (0.0.0.0: all)
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_streams: int = 8  # cameras streaming at once; one more `start` is refused
    expire_seconds: float = 30.0  # a camera silent this long is closed and freed
    fps: float = 1.0  # frames sampled per second of each stream
    chunk_seconds: float = 2.0  # one segment: its frames, then its audio
    max_new_tokens: int = 64  # an answer's length unless the question says
    late_seconds: float = 1.0  # a segment closes this long after its end even if a stream lags
    threads: int = 0  # CPU threads per ONNX Runtime session (0: one per core)
    max_packets: int = 256  # media a camera may have queued; more are dropped and counted
    vision_batch: int = 16  # Triton's max_batch_size for `vision`
    audio_batch: int = 8  # ... for `audio`
    batch_delay_us: int = 2000  # how long Triton waits for more requests to batch
    ignore_eos: bool = False  # answers of exactly max_new_tokens (benchmarks, parity tests)
    triton_log: str | None = None  # Triton's own log file (None: one in the temp folder)

    def __post_init__(self) -> None:
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        checks = [
            (all(1 <= p <= 65535 for p in ports), "ports must be in [1, 65535]"),
            (len(set(ports)) == 3, "the HTTP, gRPC and metrics ports must differ"),
            (self.max_streams >= 1, "max_streams must be at least 1"),
            (self.expire_seconds > 0, "expire_seconds must be above 0"),
            (self.max_packets >= 1, "max_packets must be at least 1"),
            (self.vision_batch >= 1 and self.audio_batch >= 1, "batch sizes must be at least 1"),
            (self.batch_delay_us >= 0, "batch_delay_us must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def live(self) -> LiveOptions:
        """Each camera's session options (LiveOptions checks its own)."""
        return LiveOptions(
            fps=self.fps,
            chunk_seconds=self.chunk_seconds,
            max_new_tokens=self.max_new_tokens,
            late_seconds=self.late_seconds,
        )


class Server:
    """See the module docstring. `start()` returns when every model is ready."""

    def __init__(self, engine_dir: str | os.PathLike, options: ServeOptions | None = None) -> None:
        """Load the engine and make its sessions now: a bad engine (or an environment PyTriton
        cannot serve from) is refused before Triton starts."""
        self._pytriton = _import_pytriton()
        self.opts = options or ServeOptions()
        self.live_options = self.opts.live()
        self.pipe = Pipeline.from_engine(Path(engine_dir), threads=self.opts.threads)
        engine = self.pipe.engine
        engine.require(st.VISION, "a served stream encodes frames")
        engine.require(st.DECODER, "answering needs the LLM")
        self.pipe.warmup()
        LiveSession(self.pipe, self.live_options)  # the window check: refused now, not per camera
        self.served = [name for name in MEDIA_STAGES if name in engine.stages]
        self.batches = {name: BatchCounter() for name in self.served}
        self.streams = Streams(
            self._open_session,
            self.opts.max_streams,
            self.opts.expire_seconds,
            audio=st.AUDIO in self.served,
            sample_rate=self.pipe.cfg.audio_sampling_rate,
            max_packets=self.opts.max_packets,
            release=_release,
        )
        self._triton: Any = None
        self._asks = 0  # `ask` requests still streaming
        self._asks_cond = threading.Condition()
        self._stopping = threading.Event()  # the cameras' media stages run here, not through Triton

    # ---- addresses ------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"http://{_url_host(self.opts.host)}:{self.opts.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{_url_host(self.opts.host)}:{self.opts.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_url_host(self.opts.host)}:{self.opts.metrics_port}/metrics"

    @property
    def triton_log(self) -> Path:
        """Where Triton writes its log (PyTriton would otherwise copy it to stdout)."""
        if self.opts.triton_log is not None:
            return Path(self.opts.triton_log)
        return Path(tempfile.gettempdir()) / f"vinci-edge-serve-{os.getpid()}-triton.log"

    @property
    def loopback_grpc(self) -> str:
        """Where the server's own sessions reach its models."""
        return f"{_url_host(_loopback(self.opts.host))}:{self.opts.grpc_port}"

    # ---- life -----------------------------------------------------------------------------------
    def start(self) -> Server:
        """Start Triton with the five models bound; returns once they are ready."""
        if self._triton is not None or self.streams.stopping:
            raise ServeError("a server starts once", hint="make a new Server to serve again")
        check_ports(self.opts)
        triton_mod, config_mod = self._pytriton
        use_own_libpython()
        triton = triton_mod.Triton(
            config=triton_mod.TritonConfig(
                http_address=self.opts.host,
                http_port=self.opts.http_port,
                grpc_address=self.opts.host,
                grpc_port=self.opts.grpc_port,
                metrics_port=self.opts.metrics_port,
                exit_timeout_secs=60,  # Ctrl-C reaches Triton too: it waits for answers in flight
                log_verbose=0,
                log_file=self.triton_log,
            )
        )
        try:
            self._bind(triton, config_mod)
            triton.run()
        except Exception as exc:
            triton.stop()
            raise ServeError(
                f"Triton did not start: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                hint="see the messages above; check that the ports are free and the engine loads",
            ) from exc
        self._triton = triton
        self.streams.start_reaper()
        return self

    def alive(self) -> bool:
        return self._triton is not None and self._triton.is_alive()

    def stop(self, timeout: float = 120.0) -> None:
        """Shut down cleanly: new streams and questions are refused ("the server is stopping"), the
        media already sent are taken in, every queued question is answered (or refused with the
        reason) and its answer delivered, then Triton stops."""
        if self._triton is None:
            return
        deadline = time.monotonic() + timeout
        self._stopping.set()  # what is queued is encoded even if Triton already refuses requests
        self.streams.stop(timeout)
        with self._asks_cond:  # the last responses go out before Triton does
            self._asks_cond.wait_for(lambda: self._asks == 0, max(0.0, deadline - time.monotonic()))
        triton, self._triton = self._triton, None
        triton.stop()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        with self._asks_cond:
            asking = self._asks
        return {
            **self.streams.stats(),
            "asks_streaming": asking,
            "batches": {name: counter.stats() for name, counter in self.batches.items()},
        }

    # ---- one camera -----------------------------------------------------------------------------
    def _open_session(self, camera: str) -> LiveSession:
        """A camera's session: the media stages through the served models, its own decoder cache."""
        engine = self.pipe.engine
        limits = {st.VISION: self.opts.vision_batch, st.AUDIO: self.opts.audio_batch}
        served = {
            name: TritonStage(
                name,
                self.loopback_grpc,
                engine.stages[name].inputs[0].name,
                TOKENS,
                limits[name],
                local=self.pipe.runner(name),
                use_local=self._stopping,
            )
            for name in self.served
        }
        stages = TritonStages(self.pipe.stages, served, self.pipe.decoder.sibling())
        return LiveSession(self.pipe.fork(stages), self.live_options)

    # ---- the models -----------------------------------------------------------------------------
    def _bind(self, triton: Any, config: Any) -> None:
        tensor, model_config = config.Tensor, config.ModelConfig
        limits = {st.VISION: self.opts.vision_batch, st.AUDIO: self.opts.audio_batch}
        for name in self.served:
            entry = self.pipe.engine.stages[name]
            out = next(o for o in entry.outputs if o.name == TOKENS)
            triton.bind(
                name,
                self._encoder(name, entry.inputs[0].name),
                inputs=[tensor(name=entry.inputs[0].name, dtype=np.float32, shape=_dims(entry.inputs[0]))],
                outputs=[tensor(name=TOKENS, dtype=np.float32, shape=_dims(out))],
                config=model_config(
                    max_batch_size=limits[name],
                    batcher=config.DynamicBatcher(max_queue_delay_microseconds=self.opts.batch_delay_us),
                ),
            )
        one = (1,)
        text = np.bytes_
        triton.bind(
            "media",
            self._media,
            inputs=[
                tensor(name="camera", dtype=text, shape=one),
                tensor(name="kind", dtype=text, shape=one),
                tensor(name="t", dtype=np.float64, shape=one),
                tensor(name="frame", dtype=np.uint8, shape=(-1, -1, -1), optional=True),
                tensor(name="samples", dtype=np.float32, shape=(-1,), optional=True),
            ],
            outputs=[tensor(name="status", dtype=text, shape=one)],
            config=model_config(batching=False),
        )
        triton.bind(
            "ask",
            self._ask,
            inputs=[
                tensor(name="camera", dtype=text, shape=one),
                tensor(name="question", dtype=text, shape=one),
                tensor(name="max_new_tokens", dtype=np.int32, shape=one, optional=True),
                tensor(name="until", dtype=np.float64, shape=one, optional=True),
            ],
            outputs=[tensor(name="text", dtype=text, shape=one), tensor(name="final", dtype=text, shape=one)],
            config=model_config(batching=False, decoupled=True),
        )
        triton.bind(
            "stats",
            self._stats,
            inputs=[tensor(name="what", dtype=text, shape=one, optional=True)],
            outputs=[tensor(name="stats", dtype=text, shape=one)],
            config=model_config(batching=False),
        )

    def _encoder(self, name: str, input_name: str) -> Callable[[list], list[dict[str, np.ndarray]]]:
        """The `vision` / `audio` model: the requests Triton batched, as one run of the engine's graph."""
        runner = self.pipe.runner(name)
        counter = self.batches[name]

        def infer(requests: list) -> list[dict[str, np.ndarray]]:
            sizes = [r[input_name].shape[0] for r in requests]
            x = np.concatenate([r[input_name] for r in requests])
            tokens = st.run_batched(runner, input_name, x, TOKENS).astype(np.float32, copy=False)
            counter.add(len(requests), x.shape[0])
            bounds = np.cumsum([0, *sizes])
            return [{TOKENS: tokens[a:b]} for a, b in zip(bounds[:-1], bounds[1:])]

        return infer

    def _media(self, requests: list) -> list[dict[str, np.ndarray]]:
        return [{"status": _json_bytes(self._media_one(r))} for r in requests]

    def _media_one(self, request: Any) -> dict[str, Any]:
        try:
            return self.streams.media(
                _text(request, "camera"),
                _text(request, "kind"),
                _number(request, "t"),
                request.data.get("frame"),
                request.data.get("samples"),
            )
        except BadRequest as exc:
            return refusal(str(exc))
        except Exception as exc:  # a bug in one request is that request's status, not the batch's
            return refusal(f"internal error: {type(exc).__name__}: {exc}")

    def _stats(self, requests: list) -> list[dict[str, np.ndarray]]:
        stats = _json_bytes(self.stats())
        return [{"stats": stats} for _ in requests]

    async def _ask(self, requests: list) -> AsyncIterator[list[dict[str, np.ndarray]]]:
        """The decoupled `ask` model: each answer's text as it is generated, then its final JSON.
        (Triton gives a model without batching one request at a time; several are answered in
        lockstep, each final in the last response.)"""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        with self._asks_cond:
            self._asks += 1
        try:
            for index, request in enumerate(requests):
                self._submit(index, request, loop, events)
            finals: dict[int, bytes] = {}
            while len(finals) < len(requests):
                index, kind, value = await events.get()
                if kind == "final":
                    finals[index] = value
                else:
                    yield [_piece(value if i == index else "", b"") for i in range(len(requests))]
            yield [_piece("", finals[i]) for i in range(len(requests))]
        finally:
            with self._asks_cond:
                self._asks -= 1
                self._asks_cond.notify_all()

    def _submit(
        self, index: int, request: Any, loop: asyncio.AbstractEventLoop, events: asyncio.Queue
    ) -> None:
        """Queue one question; its text pieces and final JSON go to `events` as (index, kind, value)."""

        def put(kind: str, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: Triton has stopped
                loop.call_soon_threadsafe(events.put_nowait, (index, kind, value))

        try:
            gen = GenerationConfig(
                max_new_tokens=_max_new_tokens(request, self.opts.max_new_tokens),
                ignore_eos=self.opts.ignore_eos,
            )
            future = self.streams.ask(
                _text(request, "camera"),
                _text(request, "question"),
                gen,
                _number(request, "until", None),
                on_text=lambda piece: put("text", piece),
            )
        except (QuestionRefused, BadRequest) as exc:
            put("final", _json({"refused": getattr(exc, "message", str(exc))}))
            return
        future.add_done_callback(lambda done: put("final", _json(_final(done))))


class BatchCounter:
    """What Triton's dynamic batcher gave a model: requests, batches, items, the largest batch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = self.batches = self.items = self.largest = 0

    def add(self, requests: int, items: int) -> None:
        with self._lock:
            self.requests += requests
            self.batches += 1
            self.items += items
            self.largest = max(self.largest, requests)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "requests": self.requests,
                "batches": self.batches,
                "items": self.items,
                "largest_batch": self.largest,
            }


# ---- starting Triton ----------------------------------------------------------------------------
def _import_pytriton() -> tuple[Any, Any]:
    """PyTriton's `triton` and `model_config` modules, in an environment it can serve from."""
    if int(np.__version__.split(".")[0]) >= 2:
        raise ServeError(
            f"PyTriton 0.7 cannot serve with numpy {np.__version__}: the Triton Python-backend stub it "
            "ships reads numpy 1's array layout, so with numpy 2 every tensor would arrive corrupted",
            hint="serve from an environment with numpy 1.26: pip install 'vinci-edge[serve]' 'numpy<2'",
        )
    try:
        import pytriton.model_config as config
        import pytriton.triton as triton
    except ImportError as exc:
        raise MissingDependencyError(
            f"`vinci-edge serve` needs NVIDIA PyTriton ({exc.name} is not installed)",
            hint="pip install 'vinci-edge[serve]' (nvidia-pytriton and tritonclient)",
        ) from exc
    return triton, config


def use_own_libpython() -> None:
    """Put this interpreter's library directory first on LD_LIBRARY_PATH, which Triton and its
    Python-backend stub inherit (see the module docstring)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if paths[:1] != [libdir]:
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *(p for p in paths if p != libdir)])


def check_ports(opts: ServeOptions) -> None:
    """Each port must be free on the host: Triton would otherwise fail after a long start."""
    ports = (("--http-port", opts.http_port), ("--grpc-port", opts.grpc_port))
    for what, port in (*ports, ("--metrics-port", opts.metrics_port)):
        family = socket.AF_INET6 if ":" in opts.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((opts.host, port))
            except OSError as exc:
                raise ServeError(
                    f"cannot listen on {opts.host} port {port}: {exc.strerror or exc}",
                    hint=f"choose another {what}, or stop what uses it",
                ) from None


def _loopback(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _dims(info: TensorInfo) -> tuple[int, ...]:
    """A stage tensor's dims without the batch axis (named or unknown dims: -1)."""
    shape = info.shape or []
    return tuple(d if isinstance(d, int) else -1 for d in shape[1:])


def _release(session: LiveSession) -> None:
    stages = session.pipe.stages
    if isinstance(stages, TritonStages):
        stages.close()


# ---- request and response tensors --------------------------------------------------------------
def _scalar(request: Any, name: str) -> Any:
    value = request.data.get(name)
    if value is None:
        return None
    if value.size != 1:
        raise BadRequest(f"the {name} input holds {value.size} values, not 1")
    return value.reshape(-1)[0]


def _text(request: Any, name: str) -> str:
    value = _scalar(request, name)
    if value is None:
        raise BadRequest(f"the {name} input is missing")
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"the {name} input is not UTF-8 text") from None
    return str(value)


def _number(request: Any, name: str, default: Any = BadRequest) -> Any:
    value = _scalar(request, name)
    if value is None:
        if default is BadRequest:
            raise BadRequest(f"the {name} input is missing")
        return default
    return float(value)


def _max_new_tokens(request: Any, default: int) -> int:
    value = _scalar(request, "max_new_tokens")
    if value is None:
        return default
    if int(value) < 1:
        raise BadRequest(f"max_new_tokens is {int(value)}; it must be at least 1")
    return int(value)


def _final(future: Future) -> dict[str, Any]:
    exc = future.exception()
    if exc is not None:
        return {"refused": getattr(exc, "message", str(exc))}
    return future.result().to_json()


def _json(value: Any) -> bytes:
    return json.dumps(value, default=str).encode("utf-8")


def _json_bytes(value: Any) -> np.ndarray:
    return np.array([_json(value)], dtype=np.object_)


def _piece(text: str, final: bytes) -> dict[str, np.ndarray]:
    return {
        "text": np.array([text.encode("utf-8")], dtype=np.object_),
        "final": np.array([final], dtype=np.object_),
    }
