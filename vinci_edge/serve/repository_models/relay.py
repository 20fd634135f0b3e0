"""`media`, `ask` and `stats` of a vinci-edge model repository: each request forwarded to the
`vinci_core` model, which holds the cameras (Triton runs every Python model in a process of its
own, so the per-camera state lives in one of them; see vinci_edge/serve/repository.py).

`media` is batched by its sequence batcher (one request per camera in a batch, each camera's in
order): the batch's requests are forwarded together, each on a thread, and answered in order.
`ask` is decoupled: each question is forwarded on a thread of its own and every piece of the answer
relayed as it comes, so a long answer holds no other question up. Written by `export_repository`;
the config's "relay" parameter says which model this is.
"""

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

CORE = "vinci_core"
CORE_OUTPUTS = {"media": ["status"], "stats": ["status"], "ask": ["text", "final"]}


def _parameter(config, key, default=""):
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


def _add_python_path(config):
    for entry in reversed([p for p in _parameter(config, "python_path").split(":") if p]):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def _strings(value):
    return np.array([value.encode("utf-8")], dtype=np.object_)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        _add_python_path(config)
        self.relay = _parameter(config, "relay")
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.pool = ThreadPoolExecutor(max_workers=max(4, int(config.get("max_batch_size", 0)) or 4))
        self.threads = []

    # ---- media and stats: one response per request ---------------------------------------------------
    def execute(self, requests):
        if self.relay == "ask":
            for request in requests:
                thread = threading.Thread(target=self._ask, args=(request,), daemon=True)
                thread.start()
            return None
        futures = [self.pool.submit(self._forward, request) for request in requests]
        return [future.result() for future in futures]

    def _inputs(self, request, names):
        """The request's tensors for the core, without the batch axis of a batched model."""
        tensors = []
        for name in names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                continue
            array = tensor.as_numpy()
            tensors.append(pb_utils.Tensor(name, array[0] if self.batched else array))
        return tensors

    def _forward(self, request):
        if self.relay == "media":
            inputs = self._inputs(request, ["camera", "kind", "t", "frame", "samples"])
        else:
            inputs = []
        status = self._core_status(inputs)
        array = _strings(status)
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(
                    "status" if self.relay == "media" else "stats", array[None] if self.batched else array
                )
            ]
        )

    def _core_status(self, inputs):
        """The core's one status JSON for an operation (its error as a refusal, never an exception)."""
        request = pb_utils.InferenceRequest(
            model_name=CORE,
            requested_output_names=["status"],
            inputs=[pb_utils.Tensor("op", _strings(self.relay)), *inputs],
        )
        status = None
        for response in request.exec(decoupled=True):
            if response.has_error():
                return json.dumps({"ok": False, "reason": response.error().message()})
            tensor = pb_utils.get_output_tensor_by_name(response, "status")
            if tensor is not None:
                status = tensor.as_numpy().reshape(-1)[0].decode("utf-8")
        return status or json.dumps({"ok": False, "reason": "the core sent no status"})

    # ---- ask: the answer relayed piece by piece --------------------------------------------------------
    def _ask(self, request):
        sender = request.get_response_sender()
        try:
            forward = pb_utils.InferenceRequest(
                model_name=CORE,
                requested_output_names=["text", "final"],
                inputs=[
                    pb_utils.Tensor("op", _strings("ask")),
                    *self._inputs(request, ["camera", "question", "max_new_tokens", "until"]),
                ],
            )
            final = None
            for response in forward.exec(decoupled=True):
                if response.has_error():
                    final = json.dumps({"refused": response.error().message()})
                    break
                text = pb_utils.get_output_tensor_by_name(response, "text")
                done = pb_utils.get_output_tensor_by_name(response, "final")
                piece = "" if text is None else text.as_numpy().reshape(-1)[0].decode("utf-8")
                last = "" if done is None else done.as_numpy().reshape(-1)[0].decode("utf-8")
                if last:
                    final = last
                    break
                if piece:
                    sender.send(self._answer_piece(piece, ""))
        except Exception as exc:  # the question is refused with the reason, never left open
            final = json.dumps({"refused": f"{type(exc).__name__}: {exc}"})
        sender.send(
            self._answer_piece("", final or json.dumps({"refused": "the core ended the answer"})),
            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
        )

    @staticmethod
    def _answer_piece(text, final):
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("text", _strings(text)),
                pb_utils.Tensor("final", _strings(final)),
            ]
        )

    def finalize(self):
        self.pool.shutdown(wait=False)
