"""SmoothQuant at the graph level: move activation outliers into the weights before INT8.

LLM activations have a few channels up to 100x larger than the rest; one per-tensor INT8 scale then
leaves the ordinary channels a handful of levels. SmoothQuant (Xiao et al., 2023) divides each input
channel j of a linear layer by s_j and multiplies row j of its weight by s_j - the product is
unchanged - with

    s_j = max|X_j| ** alpha / max|W_j,:| ** (1 - alpha)

so activations and weights share the difficulty (alpha = 0: none moved, 1: all moved to the weights).
The division is folded into whatever produces X, so the smoothed graph has the same nodes and, in
fp32, the same outputs (to rounding):

    RMSNorm -> MatMul              the norm's weight (gamma) / s              (qkv, gate/up, lm_head)
    silu(gate) * up -> MatMul      the up columns of the packed gate/up weight / s   (down)
    attention(V) -> MatMul         the V columns of the packed qkv weight (and bias) / s, one s per
                                   KV channel shared by the query heads of its group   (o_proj)

ModelOpt's ONNX path has no SmoothQuant (its SmoothQuant is in the PyTorch path), so this is done
here, on the fp32 stage graph, before any INT8 quantizer sees it. The maxima come from running the
fp32 graph on the calibration samples with the matmul inputs exposed as outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vinci_edge.progress import Progress
from vinci_edge.quantization import graph as g
from vinci_edge.quantization.calibration import iter_feeds

NORMS = ("SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "LayerNormalization")
S_RANGE = (1e-4, 1e4)  # a channel that is always ~0 must not get an absurd factor


@dataclass
class SmoothReport:
    alpha: float
    smoothed: list[str] = field(default_factory=list)  # matmul node names
    skipped: dict[str, str] = field(default_factory=dict)  # node -> why

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "smoothed": len(self.smoothed), "skipped": self.skipped}


def activation_maxima(
    model: onnx.ModelProto,
    tensors: list[str],
    stage: str,
    samples: list[dict[str, np.ndarray]],
    spec: dict[str, Any] | None,
    workdir: Path,
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Per-channel max |x| of `tensors` over every position of every calibration sample."""
    from vinci_edge.runtime.backend import SessionSettings, make_session

    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    have = {o.name for o in aug.graph.output}
    for t in tensors:
        if t not in have:
            aug.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "maxima.onnx"
    g.save(aug, path)
    del aug
    sess = make_session(path, SessionSettings())
    out: dict[str, np.ndarray] = {}
    for k, feed in enumerate(iter_feeds(stage, samples, spec)):
        got = sess.run(tensors, feed)
        for name, x in zip(tensors, got):
            m = np.abs(x.reshape(-1, x.shape[-1])).max(axis=0)
            out[name] = m if name not in out else np.maximum(out[name], m)
        if progress:
            progress(f"smoothquant: activation maxima, sample {k + 1}/{len(samples)}")
    del sess
    g.remove_files([path, path.with_name(path.name + ".data")])
    return out


class _Weights:
    """Initializers as float arrays, written back on `commit` (only the ones changed)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.protos = g.initializer_map(model)
        self.arrays: dict[str, np.ndarray] = {}
        self.dtypes: dict[str, np.dtype] = {}

    def get(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            arr = numpy_helper.to_array(self.protos[name])
            self.dtypes[name] = arr.dtype
            self.arrays[name] = arr.astype(np.float64)  # factors compose; round once at the end
        return self.arrays[name]

    def commit(self) -> None:
        for name, arr in self.arrays.items():
            self.protos[name].CopyFrom(numpy_helper.from_array(arr.astype(self.dtypes[name]), name))


def smooth(
    model: onnx.ModelProto, maxima: dict[str, np.ndarray], alpha: float, only: set[str] | None = None
) -> SmoothReport:
    """Smooth, in place, every weight MatMul (or those named in `only`) whose input producer
    is a pattern the factor can be folded into exactly. Others are listed in `skipped`."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    g.name_nodes(model)
    report = SmoothReport(alpha)
    w = _Weights(model)
    prod = g.producers(model)
    cons = g.consumers(model)
    for node in g.weight_matmuls(model):
        if only is not None and node.name not in only:
            continue
        x = node.input[0]
        if x not in maxima:
            report.skipped[node.name] = "no calibration maxima"
            continue
        folder = _fold_target(x, prod, cons, w)
        if isinstance(folder, str):
            report.skipped[node.name] = folder
            continue
        weight = w.get(node.input[1])
        act = maxima[x].astype(np.float64)
        s = folder.factors(act, np.abs(weight).max(axis=1), alpha)
        weight *= s[:, None]
        folder.divide(s)
        report.smoothed.append(node.name)
    w.commit()
    return report


def _factors(act: np.ndarray, wmax: np.ndarray, alpha: float) -> np.ndarray:
    s = np.power(np.maximum(act, 1e-8), alpha) / np.power(np.maximum(wmax, 1e-8), 1.0 - alpha)
    s = np.clip(s, *S_RANGE)
    s[act <= 0] = 1.0
    return s


@dataclass
class _NormFold:
    """x = norm(...) * gamma (+ beta): divide gamma (and beta) by s."""

    w: _Weights
    gamma: str
    beta: str | None

    def factors(self, act: np.ndarray, wmax: np.ndarray, alpha: float) -> np.ndarray:
        return _factors(act, wmax, alpha)

    def divide(self, s: np.ndarray) -> None:
        self.w.get(self.gamma)[...] /= s
        if self.beta:
            self.w.get(self.beta)[...] /= s


@dataclass
class _ColumnFold:
    """x = f(columns [lo, hi) of an upstream weight), linear in each column: divide them by s.
    `group` > 1: x has `group` channels per column of the upstream weight (the query heads sharing
    one KV head), so one factor per upstream column, taken over the group."""

    w: _Weights
    weight: str
    bias: str | None
    lo: int
    hi: int
    heads: int = 1
    kv_heads: int = 1

    def _to_kv(self, v: np.ndarray) -> np.ndarray:
        if self.heads == self.kv_heads:
            return v
        hd = v.size // self.heads
        per = self.heads // self.kv_heads
        return v.reshape(self.kv_heads, per, hd).max(axis=1).reshape(-1)

    def _from_kv(self, v: np.ndarray) -> np.ndarray:
        if self.heads == self.kv_heads:
            return v
        hd = v.size // self.kv_heads
        per = self.heads // self.kv_heads
        return np.repeat(v.reshape(self.kv_heads, 1, hd), per, axis=1).reshape(-1)

    def factors(self, act: np.ndarray, wmax: np.ndarray, alpha: float) -> np.ndarray:
        return self._from_kv(_factors(self._to_kv(act), self._to_kv(wmax), alpha))

    def divide(self, s: np.ndarray) -> None:
        s_cols = self._to_kv(s)
        self.w.get(self.weight)[:, self.lo : self.hi] /= s_cols[None]
        if self.bias:
            self.w.get(self.bias)[self.lo : self.hi] /= s_cols


def _fold_target(x: str, prod, cons, w: _Weights):
    """What the factor of input `x` can be folded into, or why not (a string)."""
    p = prod.get(x)
    if p is None:
        return "graph input"
    users = cons.get(x, [])
    if any(u.op_type != "MatMul" for u in users) or len(users) != 1:
        return f"{x} feeds more than this matmul"
    if p.op_type in NORMS and p.output[0] == x:
        gi = 2 if p.op_type == "SkipSimplifiedLayerNormalization" else 1
        gamma = p.input[gi]
        beta = None
        if p.op_type == "LayerNormalization" and len(p.input) > 2 and p.input[2]:
            beta = p.input[2]
        if gamma not in w.protos or (beta and beta not in w.protos):
            return "norm weights are not initializers"
        if len(cons.get(gamma, [])) != 1:
            return "norm weight shared"
        return _NormFold(w, gamma, beta)
    if p.op_type == "Mul":  # silu(gate) * up
        for inp in p.input:
            col = _split_columns(inp, prod, cons, w)
            if not isinstance(col, str):
                return col
        return "Mul without a split weight input"
    if p.op_type == "GroupQueryAttention" and p.output[0] == x:
        attrs = {a.name: a.i for a in p.attribute}
        if len(p.input) > 2 and not p.input[1] and not p.input[2]:  # packed q|k|v in input 0
            col = _packed_v_columns(p.input[0], attrs["num_heads"], attrs["kv_num_heads"], prod, cons, w)
        else:
            col = _split_columns(p.input[2], prod, cons, w)
        if isinstance(col, str):
            return "attention V: " + col
        col.heads, col.kv_heads = attrs["num_heads"], attrs["kv_num_heads"]
        return col
    return f"producer {p.op_type} cannot absorb a per-channel factor"


def _split_columns(t: str, prod, cons, w: _Weights) -> _ColumnFold | str:
    """`t` is output k of a Split (axis -1) of MatMul(·, W) (+ bias): columns [lo, hi) of W."""
    if len(cons.get(t, [])) != 1:
        return f"{t} has several consumers"
    split = prod.get(t)
    if split is None or split.op_type != "Split":
        return f"{t} is not a Split output"
    axis = next((a.i for a in split.attribute if a.name == "axis"), 0)
    if axis not in (-1, 2) or len(split.input) < 2 or split.input[1] not in w.protos:
        return "Split is not along the last axis with constant sizes"
    sizes = numpy_helper.to_array(w.protos[split.input[1]]).astype(int)
    k = list(split.output).index(t)
    return _matmul_columns(split.input[0], int(sizes[:k].sum()), int(sizes[: k + 1].sum()), prod, cons, w)


def _packed_v_columns(qkv: str, heads: int, kv_heads: int, prod, cons, w: _Weights) -> _ColumnFold | str:
    """The V columns of a packed q|k|v projection that GroupQueryAttention reads whole."""
    if len(cons.get(qkv, [])) != 1:
        return f"{qkv} has several consumers"
    found = _weight_matmul(qkv, prod, w)
    if isinstance(found, str):
        return found
    width = int(w.protos[found[0].input[1]].dims[1])
    head_dim = width // (heads + 2 * kv_heads)
    return _matmul_columns(qkv, (heads + kv_heads) * head_dim, width, prod, cons, w)


def _weight_matmul(t: str, prod, w: _Weights) -> tuple[onnx.NodeProto, str | None] | str:
    """(the MatMul(., W), its bias initializer or None) whose output, plus the bias, is `t`."""
    src = prod.get(t)
    bias = None
    if src is not None and src.op_type == "Add":
        bias = next((i for i in src.input if i in w.protos), None)
        src = prod.get(next(i for i in src.input if i != bias))
    if src is None or src.op_type != "MatMul" or src.input[1] not in w.protos:
        return f"{t} is not the output of a weight MatMul"
    return src, bias


def _matmul_columns(t: str, lo: int, hi: int, prod, cons, w: _Weights) -> _ColumnFold | str:
    """Columns [lo, hi) of MatMul(., W) (+ bias) whose output is `t`."""
    found = _weight_matmul(t, prod, w)
    if isinstance(found, str):
        return found
    src, bias = found
    if len(cons.get(src.output[0], [])) != 1:
        return "packed matmul output shared"
    return _ColumnFold(w, src.input[1], bias, lo, hi)


def smoothquant(
    model: onnx.ModelProto,
    alpha: float,
    stage: str,
    samples: list[dict[str, np.ndarray]],
    spec: dict[str, Any] | None,
    workdir: Path,
    progress: Progress | None = None,
    only: set[str] | None = None,
) -> SmoothReport:
    """Calibrate the maxima on `samples` and smooth `model` in place: every weight MatMul, or the
    ones named in `only` (those that will be quantized: smoothing a layer that stays fp32 gains
    nothing)."""
    g.name_nodes(model)
    tensors = sorted({n.input[0] for n in g.weight_matmuls(model) if only is None or n.name in only})
    maxima = activation_maxima(model, tensors, stage, samples, spec, workdir, progress)
    return smooth(model, maxima, alpha, only)
