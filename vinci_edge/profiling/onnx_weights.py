"""Which weights a graph reads on every call: the initializers behind its matrix multiplications.

Decode is a matrix-vector product per weight matrix, so every MatMul weight (and the output head) is
read once per token, whatever its precision; norms and rotary tables are small or read a row at a
time. The bytes are counted from each initializer's shape and element type, whether it is stored
inside the .onnx file or in its .onnx.data file.

The runtime must stay free of the `onnx` package, so this reads the protobuf wire format directly:
ModelProto.graph -> GraphProto.node / .initializer -> NodeProto.op_type / .input / .output and
TensorProto.dims / .data_type / .name. Raw weight bytes are skipped, never decoded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

# TensorProto.DataType -> bytes per element (4-bit types are half a byte).
ELEMENT_BYTES: dict[int, float] = {
    1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8,
    14: 8, 15: 16, 16: 2, 17: 1, 18: 1, 19: 1, 20: 1, 21: 0.5, 22: 0.5, 23: 0.5,
}  # fmt: skip

# Operators that multiply by a weight matrix (plain, fused, and quantized forms).
MATMUL_OPS = frozenset(
    {
        "MatMul",
        "Gemm",
        "FusedMatMul",
        "MatMulNBits",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "QLinearMatMul",
        "MatMulFpQ4",
    }
)
# Operators that only reshape or dequantize a weight on its way into a matmul (QDQ graphs).
PASS_THROUGH_OPS = frozenset({"DequantizeLinear", "Cast", "Transpose", "Reshape"})


@dataclass
class Node:
    op_type: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


@dataclass
class Initializer:
    name: str
    dims: list[int]
    data_type: int

    @property
    def nbytes(self) -> int:
        return math.ceil(math.prod(self.dims) * ELEMENT_BYTES.get(self.data_type, 4))


@dataclass
class GraphWeights:
    nodes: list[Node]
    initializers: dict[str, Initializer]

    def matmul_weight_names(self) -> set[str]:
        """Initializers read by a matmul, directly or through one dequantize/cast/transpose node."""
        feeds_matmul = {i for n in self.nodes if n.op_type in MATMUL_OPS for i in n.inputs}
        names = {i for i in feeds_matmul if i in self.initializers}
        for n in self.nodes:
            if n.op_type in PASS_THROUGH_OPS and any(o in feeds_matmul for o in n.outputs):
                names |= {i for i in n.inputs if i in self.initializers}
        return names

    def bytes_read_per_call(self) -> int:
        return sum(self.initializers[n].nbytes for n in self.matmul_weight_names())

    def total_bytes(self) -> int:
        return sum(i.nbytes for i in self.initializers.values())


def read_graph_weights(path: str | Path) -> GraphWeights:
    """Nodes and initializer shapes of an ONNX model file (external data is not opened)."""
    data = memoryview(Path(path).read_bytes())
    graph = next((v for f, v in _fields(data) if f == 7), None)  # ModelProto.graph
    if graph is None:
        raise ValueError(f"{path} holds no ONNX graph")
    nodes, inits = [], {}
    for f, v in _fields(graph):
        if f == 1:  # GraphProto.node
            nodes.append(_node(v))
        elif f == 5:  # GraphProto.initializer
            t = _tensor(v)
            inits[t.name] = t
    return GraphWeights(nodes, inits)


# ---- protobuf wire format ----------------------------------------------------------------------------
def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview):
    """Yield (field number, value): an int for varints, a memoryview for length-delimited fields."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def _node(buf: memoryview) -> Node:
    node = Node("")
    for f, v in _fields(buf):
        if f == 1:
            node.inputs.append(bytes(v).decode())
        elif f == 2:
            node.outputs.append(bytes(v).decode())
        elif f == 4:
            node.op_type = bytes(v).decode()
    return node


def _tensor(buf: memoryview) -> Initializer:
    name, dims, dtype = "", [], 0
    for f, v in _fields(buf):
        if f == 1:  # dims: repeated int64, packed (a byte run) or one varint per entry
            if isinstance(v, int):
                dims.append(v)
            else:
                pos = 0
                while pos < len(v):
                    d, pos = _varint(v, pos)
                    dims.append(d)
        elif f == 2:
            dtype = v
        elif f == 8:
            name = bytes(v).decode()
    return Initializer(name, dims, dtype)
