"""ONNX graph plumbing shared by the quantization handlers: load, save, name, type, find matmuls.

Handlers work on stage files written by `vinci-edge export` and never import the exporters: what
they know about a graph they read from the graph itself.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vinci_edge.progress import Progress

# As the exporters do: weights above this many bytes go to `<file>.data` (a protobuf cannot exceed
# 2 GB, and ONNX Runtime memory-maps external data).
EXTERNAL_DATA_BYTES = 100_000_000


def load(path: Path, weights: bool = True) -> onnx.ModelProto:
    return onnx.load(str(path), load_external_data=weights)


def save(model: onnx.ModelProto, path: Path) -> str | None:
    """Write `path` (+ `path.data` when the weights are large); returns the data file's name."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    weight_bytes = sum(_tensor_bytes(t) for t in model.graph.initializer)
    if weight_bytes > EXTERNAL_DATA_BYTES:
        # onnx moves the weights of the proto it is given out to the file (in place), which would
        # leave the caller's model pointing into this file: a second save of it loses them.
        external = onnx.ModelProto()
        external.CopyFrom(model)
        onnx.save_model(
            external,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data.name,
            size_threshold=1024,
        )
        data.chmod(0o644)  # some tools write 0600 files; an engine folder is shared read-only
        return data.name
    onnx.save_model(model, str(path))
    return None


def _tensor_bytes(t: TensorProto) -> int:
    if t.data_location == TensorProto.EXTERNAL:
        return int(next((e.value for e in t.external_data if e.key == "length"), 0))
    return len(t.raw_data) or t.ByteSize()


def stage_bytes(folder: Path, file: str) -> int:
    """Bytes on disk of a stage: the graph plus its external data."""
    path = Path(folder) / file
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name (its first output): quantizers select and exclude by name."""
    seen: set[str] = set()
    for node in model.graph.node:
        if not node.name or node.name in seen:
            base = node.output[0] if node.output and node.output[0] else node.op_type
            name, k = base, 1
            while name in seen:
                name, k = f"{base}_{k}", k + 1
            node.name = name
        seen.add(node.name)


def initializer_map(model: onnx.ModelProto) -> dict[str, TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output if out}


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            if name:
                out.setdefault(name, []).append(node)
    return out


# Ops whose first output has the rank of their first input, and broadcasting ops (the largest rank
# of their inputs): enough to follow a decoder's hidden states from `inputs_embeds` through norms,
# attention, projections and the MLP, and most of the towers'.
_RANK_OF_FIRST = {
    "Sqrt", "Neg", "Sigmoid", "Tanh", "Relu", "Erf", "Cast", "Softmax", "Identity", "Split",
    "Concat", "Slice", "Clip", "Sin", "Cos", "Transpose", "Conv", "Gelu", "FastGelu", "QuickGelu",
    "BiasGelu", "LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization", "GroupQueryAttention", "MultiHeadAttention", "Attention",
    "MatMulNBits", "QuantizeLinear", "DequantizeLinear",
}  # fmt: skip
_RANK_BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "Where", "MatMul"}
# Further outputs of the same rank: the other parts of a Split, the skip-norms' residual sum.
_ALSO_OF_FIRST = {
    "Split": range(1, 64),
    "SkipLayerNormalization": (3,),
    "SkipSimplifiedLayerNormalization": (3,),
}


def ranks(model: onnx.ModelProto) -> dict[str, int]:
    """The rank of every tensor that graph inputs, initializers and the ops above determine (one
    pass: ONNX graphs are stored in topological order). Tensors missing from it have a rank this
    cannot tell; callers then need a rank-agnostic way."""
    declared = [v for v in model.graph.input if v.type.tensor_type.HasField("shape")]
    known = {v.name: len(v.type.tensor_type.shape.dim) for v in declared}
    known.update({t.name: len(t.dims) for t in model.graph.initializer})
    shapes = [t for t in model.graph.initializer if t.data_type == TensorProto.INT64 and len(t.dims) == 1]
    dims = {t.name: int(t.dims[0]) for t in shapes}  # a 1-D int64 constant's length: a Reshape's rank
    for node in model.graph.node:
        inputs = [known.get(i) for i in node.input if i]
        if node.op_type == "Reshape" and node.input[1] in dims:
            found = dims[node.input[1]]
        elif node.op_type in _RANK_OF_FIRST and inputs and inputs[0] is not None:
            found = inputs[0]
        elif node.op_type in _RANK_BROADCAST and inputs and None not in inputs:
            found = max(inputs)
        else:
            continue
        known[node.output[0]] = found
        for i in _ALSO_OF_FIRST.get(node.op_type, ()):
            if i < len(node.output) and node.output[i]:
                known[node.output[i]] = found
    return known


# Suffix of the constant 0/1 MatMuls that sum an input's blocks for float-minimum int4 (float_min.py):
# arithmetic of a quantized layer, not a linear layer of the model.
BLOCK_SUMS = "_blocksums"


def weight_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """MatMul nodes whose B is a 2-D weight initializer: the linear layers. Activation x activation
    matmuls (attention scores in the towers) and everything else are left alone."""
    inits = initializer_map(model)
    return [
        n
        for n in model.graph.node
        if n.op_type == "MatMul"
        and n.input[1] in inits
        and len(inits[n.input[1]].dims) == 2
        and not n.name.endswith(BLOCK_SUMS)
    ]


def output_head(model: onnx.ModelProto) -> onnx.NodeProto | None:
    """The MatMul producing the decoder's `logits` output (the LM head), if the graph has one."""
    outs = {o.name for o in model.graph.output}
    if "logits" not in outs:
        return None
    node = producers(model).get("logits")
    return node if node is not None and node.op_type == "MatMul" else None


def type_untyped_outputs(model: onnx.ModelProto) -> None:
    """Record float32 as the type of every tensor ONNX shape inference cannot type.

    ONNX's shape inference does not know ONNX Runtime's contrib operators (GroupQueryAttention,
    SkipSimplifiedLayerNormalization), so every tensor downstream of them is untyped and the ORT
    static quantizer silently skips their activations ("failed to infer the type ... Skip to
    quantize it"): the result would be weight-only. Every activation of an fp32 stage graph is
    float32, and integer tensors come from inputs and initializers, which are typed already.
    """
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    typed = {
        v.name
        for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
        if v.type.tensor_type.elem_type
    } | {t.name for t in model.graph.initializer}
    for vi in inferred.graph.value_info:
        if vi.name not in {v.name for v in model.graph.value_info}:
            model.graph.value_info.append(vi)
    for node in model.graph.node:
        for out in node.output:
            if out and out not in typed:
                model.graph.value_info.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
                typed.add(out)


def standard_rms_norm(model: onnx.ModelProto) -> int:
    """Rewrite default-domain `SimplifiedLayerNormalization` (an ONNX Runtime extension that the ONNX
    checker rejects, and ModelOpt runs the checker) as standard operators; returns how many.

    RMSNorm(x) * w = x / sqrt(mean(x^2) + eps) * w, in opset-13+ operators with ReduceMean's axes as
    an attribute-free input so the graph also survives ModelOpt's upgrade to opset 19+.
    """
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in model.graph.node:
        if node.op_type != "SimplifiedLayerNormalization" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        count += 1
        x, w, y, p = node.input[0], node.input[1], node.output[0], node.name or node.output[0]
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(eps, np.float32), f"{p}.eps"),
                numpy_helper.from_array(np.array([-1], np.int64), f"{p}.axes"),
            ]
        )
        nodes += [
            helper.make_node("Mul", [x, x], [f"{p}.sq"], name=f"{p}.sq"),
            helper.make_node("ReduceMean", [f"{p}.sq", f"{p}.axes"], [f"{p}.ms"], keepdims=1, name=f"{p}.ms"),
            helper.make_node("Add", [f"{p}.ms", f"{p}.eps"], [f"{p}.mse"], name=f"{p}.mse"),
            helper.make_node("Sqrt", [f"{p}.mse"], [f"{p}.rms"], name=f"{p}.rms"),
            helper.make_node("Div", [x, f"{p}.rms"], [f"{p}.xn"], name=f"{p}.xn"),
            helper.make_node("Mul", [f"{p}.xn", w], [y], name=p),
        ]
    if count:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        # ReduceMean takes `axes` as an input from opset 18 on.
        for op in model.opset_import:
            if op.domain in ("", "ai.onnx") and op.version < 18:
                op.version = 18
    return count


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in model.graph.node:
        out[n.op_type] = out.get(n.op_type, 0) + 1
    return out


def remove_files(paths: Iterable[Path]) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(p)


# Loggers the quantization libraries write to. ONNX Runtime's MatMulNBits quantizer calls
# `logging.basicConfig(level=INFO)` on import and logs every node; ModelOpt logs to stdout (and
# reports at ERROR that a CPU machine has no NVML).
TOOL_LOGGERS = ("modelopt", "modelopt.onnx", "onnxruntime", "onnxruntime.quantization.matmul_nbits_quantizer")


class _ToolOutput(io.TextIOBase):
    """Where the tools' stdout and stderr go while they run: kept (the last CAPTURE_CHARS) for a
    failure report, and their tqdm bars ("Running AWQ scale search per node...:  40%|#   | 4/10")
    passed on as one progress line at most every `every` seconds, so long steps still show
    progress."""

    BAR = re.compile(r"([^\r\n|]+?):\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")
    CAPTURE_CHARS = 20_000

    def __init__(self, say: Progress | None, real: tuple, every: float = 10.0) -> None:
        self.say, self.real, self.every = say, real, every
        self.text = ""
        self.last = time.monotonic()

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.text = (self.text + s)[-self.CAPTURE_CHARS :]
        bars = self.BAR.findall(s)
        if self.say and bars:
            desc, done, total = bars[-1]
            now = time.monotonic()
            if now - self.last >= self.every or (done == total and int(total) > 1 and now - self.last >= 1.0):
                self.last = now
                # the progress callback prints to the real streams, not back into this one
                with contextlib.redirect_stdout(self.real[0]), contextlib.redirect_stderr(self.real[1]):
                    self.say(f"{desc.strip().rstrip('.')}: {done}/{total}")
        return len(s)


@contextlib.contextmanager
def quiet_tools(say: Progress | None = None) -> Iterator[None]:
    """Silence the quantization libraries while they run: per-node logs, tqdm bars and
    onnx-graphsurgeon warnings would bury our own progress lines and pollute stdout (which a
    caller may parse). Their progress bars reach `say` (see _ToolOutput); what they printed is
    replayed on stderr if the call fails, so nothing needed to understand a failure is lost."""
    loggers = [logging.getLogger(n) for n in TOOL_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    captured = _ToolOutput(say, (sys.stdout, sys.stderr))
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            yield
    except BaseException:
        sys.stderr.write(captured.text[-4000:])
        raise
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def matmul_nbits_quantizer():
    """ONNX Runtime's `MatMulNBitsQuantizer`, without the `logging.basicConfig(level=INFO)` its
    module runs on import: that would turn on INFO logging for every library in the process."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    for h in root.handlers[:]:
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    return MatMulNBitsQuantizer


NBITS_ACCURACY_LEVEL = 4  # MatMulNBits: int8 activations per block, integer dot products


def matmul_nbits(model: onnx.ModelProto, bits: int, block: int, symmetric: bool, **select) -> onnx.ModelProto:
    """The model with its weight MatMuls (those `select` picks: nodes_to_include / nodes_to_exclude)
    replaced by ONNX Runtime `MatMulNBits` at `bits`, blocks of `block` input channels. ONNX Runtime's
    quantizer edits `model` in place (no copy of a multi-GB proto here): use the returned one."""
    if "nodes_to_include" in select:
        # ONNX Runtime's quantizer takes nodes_to_include as an addition to the MatMuls it quantizes
        # anyway, not as a filter: exclude every other one.
        include = set(select.pop("nodes_to_include"))
        others = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in include]
        select["nodes_to_exclude"] = others
    q = matmul_nbits_quantizer()(
        model,
        bits=bits,
        block_size=block,
        is_symmetric=symmetric,
        accuracy_level=NBITS_ACCURACY_LEVEL,
        op_types_to_quantize=("MatMul",),
        **select,
    )
    with quiet_tools():
        q.process()
    return q.model.model


def restore_fp32(qdq: onnx.ModelProto, fp32: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of the static Q/DQ graph `qdq` in which the linear layers `names` compute in fp32 again:
    each reads its activation before the QuantizeLinear and its weight from `fp32` (the graph it
    was quantized from). ModelOpt's 'max' calibration runs the fp32 graph, so the other layers'
    scales are those they would get had `names` been excluded from the start: this is how a
    sensitivity sweep tries many exclusions with a single quantization."""
    out = onnx.ModelProto()
    out.CopyFrom(qdq)
    prod = producers(out)
    # Matched by output tensor: quantizers keep those, while node names may differ between graphs.
    fp32_nodes = {n.output[0]: n for n in weight_matmuls(fp32)}
    fp32_inits = initializer_map(fp32)
    for node in out.graph.node:
        if node.name not in names:
            continue
        src = fp32_nodes.get(node.output[0])
        if node.op_type != "MatMul" or src is None:
            raise ValueError(f"{node.name} is not a linear layer of both graphs")
        dq = prod.get(node.input[0])
        q = prod.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            node.input[0] = q.input[0]  # the activation before its Q/DQ pair
        weight = numpy_helper.to_array(fp32_inits[src.input[1]])
        restored = f"{node.name}.fp32_weight"
        out.graph.initializer.append(numpy_helper.from_array(weight, restored))
        node.input[1] = restored
    drop_unused(out)
    return out


def drop_unused(model: onnx.ModelProto) -> None:
    """Remove nodes and initializers nothing reads (the bypassed Q/DQ pairs and their weights)."""
    needed = {o.name for o in model.graph.output}
    keep: list[onnx.NodeProto] = []
    for node in reversed(list(model.graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    del model.graph.node[:]
    model.graph.node.extend(reversed(keep))
    inits = [t for t in model.graph.initializer if t.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
