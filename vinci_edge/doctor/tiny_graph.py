"""A tiny ONNX graph written without the `onnx` package: y = Relu(x @ W + b), x of shape (n, 16).

`vinci-edge doctor` builds and runs it on every backend and compares each with numpy. It is written
here as protobuf bytes (a dozen fields of onnx.proto) so that the doctor works on a machine with only
the runtime installed (a Jetson with `[gpu]` has no `onnx`); ONNX Runtime and TensorRT's parser read
it like any exported graph. The batch axis is dynamic (`n`), so TensorRT needs a profile, as the real
stages do.
"""

from __future__ import annotations

import numpy as np

IN, OUT, DYN = 16, 8, "n"
OPSET = 17
_FLOAT = 1  # TensorProto.FLOAT


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
        _node("MatMul", ["x", "W"], ["xw"]),
        _node("Add", ["xw", "b"], ["z"]),
        _node("Relu", ["z"], ["y"]),
    ]
    graph = b"".join(_field(1, n) for n in nodes)
    graph += _field(2, b"vinci_edge_doctor")
    graph += _field(5, _tensor("W", w)) + _field(5, _tensor("b", b))
    graph += _field(11, _value_info("x", [DYN, IN])) + _field(12, _value_info("y", [DYN, OUT]))
    opset = _field(1, b"") + _varint_field(2, OPSET)
    model = _varint_field(1, 8)  # ir_version 8
    model += _field(2, b"vinci-edge") + _field(7, graph) + _field(8, opset)
    return model


# ---- protobuf wire format -------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _node(op: str, inputs: list[str], outputs: list[str]) -> bytes:
    return b"".join(_field(1, i) for i in inputs) + b"".join(_field(2, o) for o in outputs) + _field(4, op)


def _tensor(name: str, a: np.ndarray) -> bytes:
    dims = b"".join(_varint_field(1, d) for d in a.shape)
    return dims + _varint_field(2, _FLOAT) + _field(8, name) + _field(9, a.astype("<f4").tobytes())


def _value_info(name: str, shape: list[int | str]) -> bytes:
    dims = b"".join(_field(1, _field(2, d) if isinstance(d, str) else _varint_field(1, d)) for d in shape)
    tensor = _varint_field(1, _FLOAT) + _field(2, dims)
    return _field(1, name) + _field(2, _field(1, tensor))
