"""One camera's stage runners inside the server: the media stages call the served Triton models,
the decoder is the camera's own.

A camera's live session encodes each frame (and each audio segment) through its pipeline's stages.
In the server those are `TritonStage`s: a request to the `vision` / `audio` model of this same
server, over gRPC on loopback, so Triton's dynamic batcher runs the frames of several cameras that
arrive together as one batch on the one loaded graph. The decoder is a sibling of the engine's
(`OrtDecoder.sibling`: the same ONNX Runtime session, a KV cache of the camera's own). Any other
stage (the image projector) is the engine's own runner.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from vinci_edge import stages as st
from vinci_edge.errors import MissingDependencyError

PROVIDER = "triton"


def import_grpc_client():
    """`tritonclient.grpc`, or the reason it is missing."""
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as exc:
        raise MissingDependencyError(
            "`vinci-edge serve` needs the Triton client (tritonclient is not installed)",
            hint="pip install 'vinci-edge[serve]'",
        ) from exc
    return grpcclient


class TritonStage:
    """A stage graph run by a served Triton model (the `vinci_edge.stages.StageRunner` protocol):
    one fp32 input in, one output back, at most `max_batch` items per request.

    `local`: the engine's own runner of the same graph. It runs the input when `use_local` is set
    (the server is stopping: the media a camera already sent are encoded even after Triton has
    begun to refuse new requests, e.g. when Ctrl-C reached it too) and when Triton refuses a
    request; the graph and the numbers are the same, only Triton's batching is lost."""

    provider = PROVIDER

    def __init__(
        self,
        name: str,
        url: str,
        input_name: str,
        output_name: str,
        max_batch: int,
        local: st.StageRunner | None = None,
        use_local: threading.Event | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        """`url`: the server's gRPC address (host:port); `name` is the stage's and the model's name."""
        self.name = name
        self.url = url
        self.input_name = input_name
        self.output_name = output_name
        self.max_batch = max_batch
        self.local = local
        self.use_local = use_local or threading.Event()
        self.timeout_s = timeout_s
        self._client: Any = None
        self._lock = threading.Lock()
        self.requests = 0
        self.local_runs = 0

    def run(
        self, inputs: Mapping[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        if set(inputs) != {self.input_name}:
            raise ValueError(f"the {self.name} model takes {self.input_name}, not {', '.join(inputs)}")
        if outputs is not None and set(outputs) - {self.output_name}:
            raise ValueError(f"the {self.name} model serves only {self.output_name}")
        x = np.ascontiguousarray(inputs[self.input_name], dtype=np.float32)
        if not self.use_local.is_set() or self.local is None:
            try:
                return {self.output_name: self._served(x)}
            except Exception:  # Triton refused or went away: the same graph runs here
                if self.local is None:
                    raise
        self.local_runs += 1
        return self.local.run({self.input_name: x}, [self.output_name])

    def _served(self, x: np.ndarray) -> np.ndarray:
        grpcclient = import_grpc_client()
        request = grpcclient.InferInput(self.input_name, list(x.shape), "FP32")
        request.set_data_from_numpy(x)
        wanted = [grpcclient.InferRequestedOutput(self.output_name)]
        with self._lock:  # one camera's worker calls it; the lock keeps the client to one call at a time
            result = self._connect().infer(
                self.name, [request], outputs=wanted, client_timeout=self.timeout_s
            )
            self.requests += 1
        return result.as_numpy(self.output_name)

    def _connect(self):
        if self._client is None:
            self._client = import_grpc_client().InferenceServerClient(self.url)
        return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class TritonStages:
    """One camera's stages (the `vinci_edge.stages.Stages` protocol): `served` by Triton, the
    camera's own `decoder`, and the engine's `shared` runners for the rest."""

    def __init__(self, shared: st.Stages, served: Mapping[str, TritonStage], decoder: Any) -> None:
        self.shared = shared
        self.served = dict(served)
        self.decoder = decoder

    def __getitem__(self, name: str) -> Any:
        if name == st.DECODER:
            return self.decoder
        if name in self.served:
            return self.served[name]
        return self.shared[name]

    @property
    def runners(self) -> dict[str, Any]:
        """The runners this camera uses (what `Pipeline.answer` reports providers from)."""
        return {**self.served, st.DECODER: self.decoder}

    def close(self) -> None:
        """Close the connections to the served models."""
        for stage in self.served.values():
            stage.close()
