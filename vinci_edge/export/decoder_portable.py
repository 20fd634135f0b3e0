"""The portable decoder graph: the fused decoder's maths in standard ONNX operators only.

    inputs_embeds (1, S, D), past_key_i / past_value_i (1, kv_heads, P, head_dim) for each layer i
    -> logits (1, 1, vocab) of the LAST position only, present_key_i / present_value_i
       (1, kv_heads, P + S, head_dim)

P may be 0 (a prefill). It is what TensorRT's ONNX parser takes (TensorRT has no GroupQueryAttention
or SkipSimplifiedLayerNormalization), and what ONNX Runtime runs on any provider. The KV cache is
explicit: the graph concatenates the new keys and values to the past ones and returns the whole
cache, so the runtime owns the buffers (runtime/decoder_portable.py on the CPU).

It is derived from the fused graph (decoder.py), not from the checkpoint: every ONNX Runtime
contrib node (FUSED_OPS; SimplifiedLayerNormalization is one too, though ONNX Runtime registers it
in the standard domain) is replaced by its standard-operator expansion and every other node - the
weight MatMuls, whatever precision a quantization handler gave them - is kept as it is, with the
SAME initializers. An initializer in external data keeps its location, offset and length, so the
portable graph points into the fused graph's `decoder.onnx.data`: exporting it costs a graph file
of ~100 KB and well under a second, and a quantized decoder's portable graph is derived from the
quantized fused graph the same way.

Per layer (GroupQueryAttention with do_rotary=1, rotary_interleaved=0, its default scale):

    q, k, v  = Split(qkv)                                 along the last axis
    q, k     = heads-first (Reshape + Transpose), rotated: x1 * cos - x2 * sin | x2 * cos + x1 * sin
               with cos/sin = Gather(rope tables, Range(P, P + S))    (the halves x1 | x2 of a head)
    present  = Concat(past, k or v)                       along the sequence axis
    k, v     = Expand + Reshape of the kv heads to the query heads (head h reads kv head h / group)
    scores   = MatMul(q / sqrt(head_dim), k^T), Where(key > query position, lowest float, scores)
    out      = MatMul(Softmax(scores), v), back to (1, S, heads * head_dim)

RMSNorm (SimplifiedLayerNormalization, and Skip... with its residual Add) is x / Sqrt(ReduceMean(x *
x) + eps) * w, computed in float32 (an fp16 graph casts in and out, as ONNX Runtime's kernel does).
Positions and the causal mask come from the shapes of `inputs_embeds` and `past_key_0` (Shape,
Slice, Range, Less), so the graph has no position input to get wrong.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vinci_edge.errors import EngineError
from vinci_edge.manifest import ATTENTION, PORTABLE, StageEntry, TensorInfo

PORTABLE_FILE = "decoder_portable.onnx"
FUSED_OPS = ("GroupQueryAttention", "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization")
KV_INPUTS = ("seqlens_k", "total_sequence_length")  # the fused graph's cache-length inputs


class _Builder:
    """Nodes and small constants of the rewritten graph, with unique names."""

    def __init__(self, opset: int, float_type: int) -> None:
        self.opset = opset
        self.float_type = float_type
        self.nodes: list[onnx.NodeProto] = []
        self.consts: list[onnx.TensorProto] = []
        self._const_names: dict[tuple, str] = {}

    def node(self, op: str, inputs: list[str], out: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def const(self, values, dtype=np.int64) -> str:
        array = np.asarray(values, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._const_names:
            name = f"portable.const{len(self._const_names)}"
            self.consts.append(numpy_helper.from_array(array, name))
            self._const_names[key] = name
        return self._const_names[key]

    def reduce_mean(self, x: str, out: str) -> str:
        """ReduceMean over the last axis, keeping it (axes an attribute before opset 18)."""
        if self.opset >= 18:
            return self.node("ReduceMean", [x, self.const([-1])], out, keepdims=1)
        return self.node("ReduceMean", [x], out, axes=[-1], keepdims=1)

    def rms_norm(self, x: str, weight: str, eps: float, out: str) -> str:
        fp16 = self.float_type == TensorProto.FLOAT16
        xf = self.node("Cast", [x], f"{out}.xf", to=TensorProto.FLOAT) if fp16 else x
        sq = self.node("Mul", [xf, xf], f"{out}.sq")
        mean = self.reduce_mean(sq, f"{out}.mean")
        var = self.node("Add", [mean, self.const(eps, np.float32)], f"{out}.var")
        rms = self.node("Sqrt", [var], f"{out}.rms")
        normed = self.node("Div", [xf, rms], f"{out}.normed")
        if fp16:
            normed = self.node("Cast", [normed], f"{out}.normed16", to=TensorProto.FLOAT16)
        return self.node("Mul", [normed, weight], out)


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _positions(b: _Builder, first_past: str) -> dict[str, str]:
    """P, S and what every layer shares: the (S,) positions, the (S, T) mask of keys a query may not
    see (key index > query position), and 1 / sqrt(head_dim) is per layer."""
    shape_x = b.node("Shape", ["inputs_embeds"], "portable.shape_x")
    shape_p = b.node("Shape", [first_past], "portable.shape_past")
    s = b.node("Slice", [shape_x, b.const([1]), b.const([2])], "portable.S")
    p = b.node("Slice", [shape_p, b.const([2]), b.const([3])], "portable.P")
    t = b.node("Add", [p, s], "portable.T")
    p0 = b.node("Squeeze", [p, b.const([0])], "portable.P0")
    t0 = b.node("Squeeze", [t, b.const([0])], "portable.T0")
    one = b.const(1)
    pos = b.node("Range", [p0, t0, one], "portable.positions")  # (S,) P .. T-1
    keys = b.node("Range", [b.const(0), t0, one], "portable.keys")  # (T,) 0 .. T-1
    rows = b.node("Unsqueeze", [pos, b.const([1])], "portable.rows")  # (S, 1)
    masked = b.node("Less", [rows, keys], "portable.masked")  # (S, T): key after the query
    return {"positions": pos, "masked": masked}


def _attention(b: _Builder, node: onnx.NodeProto, shared: dict[str, str], head_dim: int) -> None:
    """One GroupQueryAttention (packed q|k|v, rotary, past/present) in standard operators."""
    qkv, _, _, past_k, past_v, _, _, cos_table, sin_table = list(node.input)[:9]
    out, present_k, present_v = node.output[:3]
    if node.input[1] or node.input[2]:
        raise EngineError(f"{node.name}: only a packed q|k|v GroupQueryAttention can be made portable")
    if _attr(node, "do_rotary", 0) != 1 or _attr(node, "rotary_interleaved", 0) != 0:
        raise EngineError(f"{node.name}: only non-interleaved rotary attention can be made portable")
    heads, kv_heads = int(_attr(node, "num_heads")), int(_attr(node, "kv_num_heads"))
    scale = _attr(node, "scale", 0.0) or 1.0 / np.sqrt(head_dim)
    group, n = heads // kv_heads, node.name or out
    q, k, v = (f"{n}.{x}" for x in "qkv")
    b.nodes.append(
        helper.make_node(
            "Split",
            [qkv, b.const([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim])],
            [q, k, v],
            name=f"{n}.split",
            axis=-1,
        )
    )

    def heads_first(x: str, count: int) -> str:  # (1, S, count * hd) -> (1, count, S, hd)
        r = b.node("Reshape", [x, b.const([0, 0, count, head_dim])], f"{x}.heads")
        return b.node("Transpose", [r], f"{x}.t", perm=[0, 2, 1, 3])

    half = b.const([head_dim // 2, head_dim // 2])
    cos = b.node("Gather", [cos_table, shared["positions"]], f"{n}.cos", axis=0)  # (S, hd/2)
    sin = b.node("Gather", [sin_table, shared["positions"]], f"{n}.sin", axis=0)

    def rotate(x: str) -> str:
        x1, x2 = f"{x}.x1", f"{x}.x2"
        b.nodes.append(helper.make_node("Split", [x, half], [x1, x2], name=f"{x}.halves", axis=-1))
        c1, s2 = b.node("Mul", [x1, cos], f"{x}.c1"), b.node("Mul", [x2, sin], f"{x}.s2")
        c2, s1 = b.node("Mul", [x2, cos], f"{x}.c2"), b.node("Mul", [x1, sin], f"{x}.s1")
        a = b.node("Sub", [c1, s2], f"{x}.r1")
        c = b.node("Add", [c2, s1], f"{x}.r2")
        return b.node("Concat", [a, c], f"{x}.rot", axis=-1)

    qr = rotate(heads_first(q, heads))
    kr = rotate(heads_first(k, kv_heads))
    b.node("Concat", [past_k, kr], present_k, axis=2)
    b.node("Concat", [past_v, heads_first(v, kv_heads)], present_v, axis=2)

    def expand(x: str) -> str:  # (1, kv, T, hd) -> (1, heads, T, hd), kv head j serving heads j*g..
        if group == 1:
            return x
        u = b.node("Unsqueeze", [x, b.const([2])], f"{x}.u")
        shape = b.node("Shape", [u], f"{x}.ushape")
        wide = b.node(
            "Mul", [shape, b.const([1, 1, group, 1, 1])], f"{x}.wide"
        )  # (1, kv, 1, T, hd) -> (1, kv, g, T, hd)
        e = b.node("Expand", [u, wide], f"{x}.e")
        return b.node("Reshape", [e, b.const([0, heads, -1, head_dim])], f"{x}.rep")

    kt = b.node("Transpose", [expand(present_k)], f"{n}.kt", perm=[0, 1, 3, 2])
    qs = b.node("Mul", [qr, b.const(scale, _np_float(b.float_type))], f"{n}.qs")
    scores = b.node("MatMul", [qs, kt], f"{n}.scores")  # (1, H, S, T)
    lowest = b.const(np.finfo(_np_float(b.float_type)).min, _np_float(b.float_type))
    masked = b.node("Where", [shared["masked"], lowest, scores], f"{n}.masked")
    probs = b.node("Softmax", [masked], f"{n}.probs", axis=-1)
    ctx = b.node("MatMul", [probs, expand(present_v)], f"{n}.ctx")  # (1, H, S, hd)
    back = b.node("Transpose", [ctx], f"{n}.ctx_t", perm=[0, 2, 1, 3])
    b.node("Reshape", [back, b.const([0, 0, heads * head_dim])], out)


def _np_float(onnx_type: int):
    return np.float16 if onnx_type == TensorProto.FLOAT16 else np.float32


def portable_model(fused: onnx.ModelProto) -> onnx.ModelProto:
    """The portable graph of a fused decoder graph (module docstring). `fused` is loaded without
    its external data; the result's initializers are the same protos (external references kept)."""
    graph = fused.graph
    opset = next((o.version for o in fused.opset_import if o.domain in ("", "ai.onnx")), 17)
    inputs = {i.name: i for i in graph.input}
    float_type = inputs["inputs_embeds"].type.tensor_type.elem_type
    pasts = [i.name for i in graph.input if i.name.startswith("past_key_")]
    if not pasts:
        raise EngineError("the decoder graph has no past_key inputs: not a vinci-edge decoder graph")
    dims = inputs[pasts[0]].type.tensor_type.shape.dim
    head_dim = int(dims[3].dim_value)
    b = _Builder(opset, float_type)
    shared = _positions(b, "past_key_0")
    for node in graph.node:
        if node.op_type not in FUSED_OPS:
            b.nodes.append(node)
        elif node.op_type == "GroupQueryAttention":
            _attention(b, node, shared, head_dim)
        elif node.op_type == "SimplifiedLayerNormalization":
            b.rms_norm(node.input[0], node.input[1], _attr(node, "epsilon", 1e-5), node.output[0])
        else:  # SkipSimplifiedLayerNormalization: out = RMSNorm(x + skip), the sum as output 3
            x, skip, weight = node.input[:3]
            total = node.output[3] if len(node.output) > 3 and node.output[3] else f"{node.name}.sum"
            b.node("Add", [x, skip], total)
            b.rms_norm(total, weight, _attr(node, "epsilon", 1e-5), node.output[0])

    def kv(name: str, axis: str) -> onnx.ValueInfoProto:
        d = [1, int(dims[1].dim_value), axis, head_dim]
        return helper.make_tensor_value_info(name, float_type, d)

    new_inputs = [i for i in graph.input if i.name not in KV_INPUTS and not i.name.startswith("past_")]
    new_outputs = [o for o in graph.output if not o.name.startswith("present_")]
    for i in range(len(pasts)):
        new_inputs += [kv(f"past_key_{i}", "past_sequence"), kv(f"past_value_{i}", "past_sequence")]
        new_outputs += [kv(f"present_key_{i}", "total_sequence"), kv(f"present_value_{i}", "total_sequence")]
    out = helper.make_graph(
        b.nodes, "vinci_edge_decoder_portable", new_inputs, new_outputs, [*graph.initializer, *b.consts]
    )
    imports = [helper.make_opsetid("", opset)]
    imports += [o for o in fused.opset_import if o.domain not in ("", "ai.onnx", "com.microsoft")]
    if any(n.domain == "com.microsoft" for n in b.nodes):  # e.g. a quantized graph's MatMulNBits
        imports.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(out, opset_imports=imports, producer_name="vinci-edge")
    model.ir_version = fused.ir_version
    for p in fused.metadata_props:
        model.metadata_props.append(p)
    return model


def export_portable(fused_path: Path, out_path: Path) -> onnx.ModelProto:
    """Write the portable graph of the fused graph at `fused_path` to `out_path`, in the same folder
    (its external-data references are relative to it). Reads no weights."""
    fused_path, out_path = Path(fused_path), Path(out_path)
    if fused_path.parent.resolve() != out_path.parent.resolve():
        raise ValueError("the portable graph must sit beside the fused one: they share its weights file")
    model = portable_model(onnx.load(str(fused_path), load_external_data=False))
    onnx.save_model(model, str(out_path))
    return model


def nonstandard_ops(model: onnx.ModelProto) -> list[str]:
    """The op types of `model` that are not standard ONNX operators at its opset (contrib ops, in
    whatever domain they are registered): empty for a graph TensorRT's parser can take."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    bad = {
        f"{n.domain or 'ai.onnx'}:{n.op_type}"
        for n in model.graph.node
        if n.domain not in ("", "ai.onnx") or not onnx.defs.has(n.op_type, opset, "")
    }
    return sorted(bad)


def write_portable(folder: Path, fused: StageEntry) -> tuple[StageEntry, list[str]]:
    """Write the portable graph of the fused decoder graph `fused` (an entry of the engine folder
    `folder`) beside it, and return its manifest entry and its non-standard op types (empty unless
    the fused graph's weight layers are contrib ops, e.g. `int4`'s MatMulNBits: then it is no
    graph for TensorRT, and the caller does not record it)."""
    folder = Path(folder)
    model = export_portable(folder / fused.file, folder / PORTABLE_FILE)
    spec = replace(fused.decoder, attention=ATTENTION[PORTABLE])
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    entry = StageEntry(
        file=PORTABLE_FILE,
        dtype=fused.dtype,
        inputs=[TensorInfo(n) for n in spec.input_names()],
        outputs=[TensorInfo("logits", [1, 1, spec.vocab_size], fused.dtype)],
        opset=opset,
        exporter="vinci-edge graph rewrite of the fused decoder (standard ONNX operators)",
        external_data=fused.external_data,  # the fused graph's weights file, shared
        decoder=spec,
        precision=fused.precision,
        ort_optimization=fused.ort_optimization,
    )
    return entry, nonstandard_ops(model)
