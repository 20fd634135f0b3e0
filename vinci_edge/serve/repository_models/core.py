"""`vinci_core` of a vinci-edge model repository: the cameras' live sessions, in one process.

Triton runs each Python model in a process of its own; `media`, `ask` and `stats` forward their
requests here (BLS), so every camera's state lives in this one. The per-camera logic is the one
`vinci-edge serve` runs (`vinci_edge.serve.streams.Streams`: admission, isolation, expiry, end):
each camera a `LiveSession` whose media stages call this server's `vision` and `audio` models
(BLS again: Triton's dynamic batcher runs frames of several cameras as one batch) and whose decoder
is a sibling of the engine's (one loaded graph, a KV cache per camera).

Decoupled: every request is handled on a thread and answered through its response sender, so a
long answer holds up neither media nor other questions. Operations ("op"): media (one "status"),
ask ("text" pieces, then "final": the answer's JSON or {"refused": reason}), stats (one "status").
Written by `export_repository`; its parameters say where the engine is and how to run it.
"""

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _parameter(config, key, default=""):
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


def _strings(value):
    return np.array([value.encode("utf-8")], dtype=np.object_)


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _text(request, name, default=""):
    value = _input(request, name)
    if value is None:
        return default
    item = value.reshape(-1)[0]
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)


def _number(request, name, kind=float):
    value = _input(request, name)
    return None if value is None else kind(value.reshape(-1)[0])


class BlsStage:
    """A media stage run by a model of this Triton server (the StageRunner protocol, through BLS)."""

    provider = "triton"

    def __init__(self, name, spec):
        self.name = name
        self.input_name = spec["input"]
        self.output_name = spec["output"]
        self.dtype = np.dtype(spec["dtype"])
        self.max_batch = int(spec["max_batch"])

    def run(self, inputs, outputs=None):
        x = np.ascontiguousarray(inputs[self.input_name], dtype=self.dtype)
        request = pb_utils.InferenceRequest(
            model_name=self.name,
            requested_output_names=[self.output_name],
            inputs=[pb_utils.Tensor(self.input_name, x)],
        )
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"the {self.name} model failed: {response.error().message()}")
        out = pb_utils.get_output_tensor_by_name(response, self.output_name).as_numpy()
        return {self.output_name: out.astype(np.float32, copy=False)}

    def close(self):
        pass


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        for entry in reversed([p for p in _parameter(config, "python_path").split(":") if p]):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        from vinci_edge import stages as st
        from vinci_edge.live.session import LiveOptions, LiveSession
        from vinci_edge.runtime.pipeline import Pipeline
        from vinci_edge.serve.streams import Streams
        from vinci_edge.serve.triton_stages import TritonStages

        engine = Path(args["model_repository"]) / args["model_version"] / _parameter(config, "engine")
        self.pipeline = Pipeline.from_engine(engine, provider=_parameter(config, "provider", "cpu"))
        self.pipeline.warmup()  # the decoder's session loads now, not with the first camera
        encoders = json.loads(_parameter(config, "encoders", "{}"))
        options = LiveOptions(**json.loads(_parameter(config, "live", "{}")))

        def open_session(camera):
            served = {name: BlsStage(name, spec) for name, spec in encoders.items()}
            stages = TritonStages(self.pipeline.stages, served, self.pipeline.decoder.sibling())
            return LiveSession(self.pipeline.fork(stages), options)

        self.streams = Streams(
            open_session,
            int(_parameter(config, "max_streams", "8")),
            float(_parameter(config, "expire_seconds", "60")),
            audio=st.AUDIO in encoders,
            sample_rate=self.pipeline.cfg.audio_sampling_rate,
        )
        self.streams.start_reaper()
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="core")
        self.max_new_tokens = options.max_new_tokens

    def execute(self, requests):
        for request in requests:
            op = _text(request, "op")
            if op == "ask":
                threading.Thread(target=self._ask, args=(request,), daemon=True).start()
            else:
                self.pool.submit(self._status, op, request)
        return None

    # ---- media and stats ---------------------------------------------------------------------------
    def _status(self, op, request):
        sender = request.get_response_sender()
        try:
            status = self._media(request) if op == "media" else self._stats(op)
        except Exception as exc:  # a bug here is a refusal with the reason, never a hung request
            status = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
        response = pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor("status", _strings(json.dumps(status, default=str)))]
        )
        sender.send(response, flags=FINAL)

    def _media(self, request):
        return self.streams.media(
            _text(request, "camera"),
            _text(request, "kind"),
            _number(request, "t") or 0.0,
            frame=_input(request, "frame"),
            samples=_input(request, "samples"),
        )

    def _stats(self, op):
        if op != "stats":
            return {"ok": False, "reason": f"unknown operation {op!r}"}
        return self.streams.stats()

    # ---- ask ---------------------------------------------------------------------------------------
    def _ask(self, request):
        from vinci_edge.generation import GenerationConfig

        sender = request.get_response_sender()

        def piece(text):
            sender.send(self._answer(text, ""))

        try:
            max_new = _number(request, "max_new_tokens", int) or self.max_new_tokens
            future = self.streams.ask(
                _text(request, "camera"),
                _text(request, "question"),
                GenerationConfig(max_new_tokens=max_new),
                until=_number(request, "until"),
                on_text=piece,
            )
            final = future.result().to_json()
        except Exception as exc:  # QuestionRefused, or anything else: refused with the reason
            final = {"refused": getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"}
        sender.send(self._answer("", json.dumps(final, default=_plain)), flags=FINAL)

    @staticmethod
    def _answer(text, final):
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("text", _strings(text)),
                pb_utils.Tensor("final", _strings(final)),
            ]
        )

    def finalize(self):
        self.streams.stop(timeout=30.0)
        self.pool.shutdown(wait=False)


def _plain(value):
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return str(value)
