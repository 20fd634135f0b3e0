"""Small ONNX graphs written as protobuf bytes, without the `onnx` package.

The runtime must work where only it is installed (a Jetson with `[gpu]` has no `onnx`), yet it
builds a few graphs of its own at run time: the doctor's tiny graph (doctor/tiny_graph.py) and the
integer GEMM check (integer_gemm.py). These are the dozen fields of onnx.proto they need; ONNX
Runtime and TensorRT's parser read the result like any exported graph.
"""

from __future__ import annotations

import numpy as np

# TensorProto.DataType
FLOAT, UINT8, INT8, INT32 = 1, 2, 3, 6
MS_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib operators
_DTYPES = {np.dtype("<f4"): FLOAT, np.dtype("u1"): UINT8, np.dtype("i1"): INT8, np.dtype("<i4"): INT32}


def model(
    nodes: list[bytes],
    initializers: list[bytes],
    inputs: list[bytes],
    outputs: list[bytes],
    name: str,
    opset: int,
    domains: dict[str, int] | None = None,
) -> bytes:
    """A serialized ModelProto (ir_version 8) of one graph: the default domain at `opset`, and
    `domains` (name -> version) for nodes of other domains (com.microsoft)."""
    graph = b"".join(_field(1, n) for n in nodes)
    graph += _field(2, name)
    graph += b"".join(_field(5, t) for t in initializers)
    graph += b"".join(_field(11, v) for v in inputs) + b"".join(_field(12, v) for v in outputs)
    opsets = {"": opset, **(domains or {})}
    imports = b"".join(_field(8, _field(1, d) + _varint_field(2, v)) for d, v in opsets.items())
    return _varint_field(1, 8) + _field(2, b"vinci-edge") + _field(7, graph) + imports


def node(op: str, inputs: list[str], outputs: list[str], domain: str = "") -> bytes:
    out = b"".join(_field(1, i) for i in inputs) + b"".join(_field(2, o) for o in outputs) + _field(4, op)
    return out + (_field(7, domain) if domain else b"")


def tensor(name: str, a: np.ndarray) -> bytes:
    """An initializer: float32, uint8, int8 or int32, any rank (a scalar has no dims)."""
    a = np.asarray(a)
    dtype = _DTYPES[a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype]
    dims = b"".join(_varint_field(1, d) for d in a.shape)
    raw = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
    return dims + _varint_field(2, dtype) + _field(8, name) + _field(9, raw)


def value_info(name: str, shape: list[int | str], dtype: int = FLOAT) -> bytes:
    """A graph input or output: `shape` entries are sizes or names of dynamic axes."""
    dims = b"".join(_field(1, _field(2, d) if isinstance(d, str) else _varint_field(1, d)) for d in shape)
    type_proto = _varint_field(1, dtype) + _field(2, dims)
    return _field(1, name) + _field(2, _field(1, type_proto))


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
