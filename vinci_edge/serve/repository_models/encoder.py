"""`vision` / `audio` of a vinci-edge model repository served by the Python backend: the engine's
stage graph through ONNX Runtime, every batch Triton's dynamic batcher forms (requests of several
cameras) run as one call. For a Triton without the onnxruntime backend; written by
`export_repository(..., RepositoryOptions(encoders="python"))`.
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


def _parameter(config, key, default=""):
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        for entry in reversed([p for p in _parameter(config, "python_path").split(":") if p]):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        import onnxruntime as ort

        graph = (
            Path(args["model_repository"]).parent
            / "vinci_core"
            / "1"
            / "engine"
            / _parameter(config, "stage_file")
        )
        wanted = (
            "CUDAExecutionProvider" if _parameter(config, "provider") == "cuda" else "CPUExecutionProvider"
        )
        providers = [p for p in (wanted, "CPUExecutionProvider") if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(str(graph), providers=providers)
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]

    def execute(self, requests):
        arrays = {name: [] for name in self.inputs}
        sizes = []
        for request in requests:
            for name in self.inputs:
                arrays[name].append(pb_utils.get_input_tensor_by_name(request, name).as_numpy())
            sizes.append(arrays[self.inputs[0]][-1].shape[0])
        feed = {name: np.concatenate(parts) for name, parts in arrays.items()}
        results = dict(zip(self.outputs, self.session.run(self.outputs, feed)))
        responses, start = [], 0
        for size in sizes:
            tensors = [pb_utils.Tensor(name, results[name][start : start + size]) for name in self.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
