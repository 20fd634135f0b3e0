"""A tiny ONNX graph written without the `onnx` package: y = Relu(x @ W + b), x of shape (n, 16).

`vinci-edge doctor` builds and runs it on every backend and compares each with numpy. It is written
here as protobuf bytes (runtime/onnx_bytes.py) so that the doctor works on a machine with only
the runtime installed (a Jetson with `[gpu]` has no `onnx`); ONNX Runtime and TensorRT's parser read
it like any exported graph. The batch axis is dynamic (`n`), so TensorRT needs a profile, as the real
stages do.
"""

from __future__ import annotations

import numpy as np

from vinci_edge.runtime import onnx_bytes as ob

IN, OUT, DYN = 16, 8, "n"
OPSET = 17


def weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((IN, OUT)).astype(np.float32) / 4, rng.standard_normal(OUT).astype(np.float32)


def reference(x: np.ndarray, seed: int = 0) -> np.ndarray:
    w, b = weights(seed)
    return np.maximum(x.astype(np.float64) @ w + b, 0).astype(np.float32)


def graph_bytes(seed: int = 0) -> bytes:
    """The model as serialized ONNX (ModelProto)."""
    w, b = weights(seed)
    nodes = [
        ob.node("MatMul", ["x", "W"], ["xw"]),
        ob.node("Add", ["xw", "b"], ["z"]),
        ob.node("Relu", ["z"], ["y"]),
    ]
    return ob.model(
        nodes,
        [ob.tensor("W", w), ob.tensor("b", b)],
        [ob.value_info("x", [DYN, IN])],
        [ob.value_info("y", [DYN, OUT])],
        "vinci_edge_doctor",
        OPSET,
    )
