"""4-bit weight blocks with a float minimum (GGUF's Q4_1) on ONNX Runtime's MatMulNBits.

Each block of `block` input channels of an output channel is stored as `w = d * q + m`: 16 levels
q = 0..15 spanning the block's min m and max M (d = (M - m) / 15). MatMulNBits only takes an
*integer* zero point z (w = d * (q - z)), so m = -d * z cannot be hit in general: rounding z moves
every weight of the block by up to d / 2, which re-rounds weights that were already on a 4-bit grid
(a checkpoint dequantized from Q4_1, such as SmolLM2's; see docs/quantization.md, 'INT4 with a
float minimum').

Split z = zi + f (zi the nearest integer in 0..15, f the remainder). Then, for an input x,

    sum_k w_k x_k  =  sum_k d (q_k - zi) x_k  -  d f * sum_{k in block} x_k

The first term is a plain MatMulNBits; the second is one coefficient c = -d f per (output, block)
times the block's input sum. So the layer becomes

    sums  = ReduceSum(Reshape(x, (..., K / block, block)), last axis)
    x_ext = Concat(x, sums)
    y     = MatMulNBits(x_ext)           weights: the 4-bit blocks, then the c's as extra blocks

with the c's themselves 4-bit blocks (their error is ~1/15 of the shift they remove). This is how
llama.cpp's Q4_1 kernels work too (the block sums of the activations carry the minimum). The block
sums are computed once per distinct input (the decoder's q/k/v and gate/up projections share
theirs). Where K is not whole blocks, or x's rank cannot be read from the graph, a 0/1 matrix
does the summing instead (x @ Bsum, zero columns completing x's last block). Reshape + ReduceSum
is preferred where it applies because a view and a sum cost less than the small MatMuls (the
A/B timings are in docs/quantization.md, 'INT4 with a float minimum').

On weights that are NOT on such a grid (a bf16 checkpoint) this is round-to-nearest with a float
minimum - Q4_1's quality. It still beats an integer zero point, which shifts a whole block
coherently: 2.3x lower output error on a trained ViT-S (see docs/quantization.md, 'INT4 on
trained weights that are not 4-bit already').
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from vinci_edge.quantization import graph as g

LEVELS = 15  # 4 bits
LAST_AXIS = "blocksums_axis"


@dataclass
class Blocks:
    """One weight (N outputs, K inputs) as 4-bit blocks: w ~ scale * (q - zero) + correction."""

    q: np.ndarray  # (N, nb, block) uint8 in 0..15
    scale: np.ndarray  # (N, nb)
    zero: np.ndarray  # (N, nb) uint8: the integer part of the float zero point
    correction: np.ndarray  # (N, nb): -scale * (float zero - integer zero), |.| <= scale / 2


def quantize(w_t: np.ndarray, block: int) -> Blocks:
    """Round (N, K) weights to 4-bit blocks spanning each block's min and max (K padded to whole
    blocks by repeating each row's last weight, which moves no min or max).

    A block whose weights all have one sign has its float zero point outside 0..15, and the
    correction would be many steps large (and coarse once rounded to 4 bits). Such blocks are rare in
    trained weights; they get a range widened to include 0 with an integer zero point, as plain
    asymmetric round-to-nearest does, and no correction."""
    n, k = w_t.shape
    nb = -(-k // block)
    w = np.pad(w_t.astype(np.float64), ((0, 0), (0, nb * block - k)), mode="edge").reshape(n, nb, block)
    lo, hi = w.min(-1), w.max(-1)
    one_sign = (lo > 0) | (hi < 0)
    lo, hi = np.where(one_sign, np.minimum(lo, 0), lo), np.where(one_sign, np.maximum(hi, 0), hi)
    scale = (hi - lo) / LEVELS
    scale[scale == 0] = 1.0  # an all-zero block
    zero = -lo / scale  # in [0, 15]
    zero_int = np.rint(zero)
    zero = np.where(one_sign, zero_int, zero)
    q = np.clip(np.rint(w / scale[..., None] + zero[..., None]), 0, LEVELS).astype(np.uint8)
    return Blocks(q, scale, zero_int.astype(np.uint8), -scale * (zero - zero_int))


def dequantize(b: Blocks) -> np.ndarray:
    """The (N, nb * block) weights the blocks stand for (tests and error estimates)."""
    w = b.scale[..., None] * (b.q - b.zero[..., None].astype(np.float64)) + b.correction[..., None]
    return w.reshape(b.q.shape[0], -1)


def _integer_blocks(c: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plain asymmetric 4-bit blocks (integer zero point) for the correction coefficients."""
    n, p = c.shape
    w = c.reshape(n, p // block, block).astype(np.float64)
    lo, hi = np.minimum(w.min(-1), 0), np.maximum(w.max(-1), 0)
    scale = (hi - lo) / LEVELS
    scale[scale == 0] = 1.0
    zero = np.clip(np.rint(-lo / scale), 0, LEVELS)
    q = np.clip(np.rint(w / scale[..., None] + zero[..., None]), 0, LEVELS).astype(np.uint8)
    return q, scale, zero.astype(np.uint8)


def _pack(nibbles: np.ndarray) -> np.ndarray:
    """Two 4-bit values a byte along the last axis, the first in the low nibble (MatMulNBits)."""
    if nibbles.shape[-1] % 2:
        nibbles = np.concatenate([nibbles, np.zeros((*nibbles.shape[:-1], 1), np.uint8)], axis=-1)
    return (nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)).astype(np.uint8)


def extra_columns(k: int, block: int) -> tuple[int, int]:
    """(pad, sums): zero columns that complete x's last block, then the block-sum columns (a whole
    number of blocks) appended to a layer's input."""
    nb = -(-k // block)
    return nb * block - k, -(-nb // block) * block


def replace_matmuls(
    model: onnx.ModelProto, names: list[str], block: int, accuracy_level: int
) -> tuple[onnx.ModelProto, float]:
    """The model with its weight MatMuls `names` computed as float-minimum 4-bit blocks (module
    docstring), and the fraction of blocks whose weights were already on such a grid (1.0 for a
    checkpoint dequantized from Q4_1, ~0 for bf16 weights: says whether INT4 loses anything). Nodes
    keep their outputs; each becomes `<name>_Q4` (as ONNX Runtime's quantizer names them). Like
    that quantizer it edits `model` in place: a copy of a 7B LLM's fp32 graph would double the
    peak memory of an export."""
    inits = g.initializer_map(model)
    chosen = {n.name: n for n in g.weight_matmuls(model) if n.name in names}
    if len(chosen) != len(set(names)):
        raise ValueError(f"not weight MatMuls of the graph: {sorted(set(names) - set(chosen))}")
    extended: dict[str, str] = {}  # input tensor -> its extended version
    blocks = on_grid = 0
    sum_weights: dict[int, str] = {}  # K -> the 0/1 matrix summing its blocks (one per size)
    block_shapes: dict[int, str] = {}  # K -> the shape viewing an input as (..., K / block, block)
    widths: dict[str, int] = {}  # input tensor -> the width of its extended version
    ranks = g.ranks(model)
    nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    for node in model.graph.node:
        if node.name not in chosen:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])  # (K, N)
        dtype = w.dtype
        k, n = w.shape
        pad, sums = extra_columns(k, block)
        x = node.input[0]
        if x not in extended:
            summed, extended[x] = f"{x}{g.BLOCK_SUMS}", f"{x}{g.BLOCK_SUMS}_ext"
            if pad == 0 and x in ranks:
                # x viewed as (..., K / block, block) and summed: cheaper than the MatMul below
                # (module docstring), and only K / block columns appended.
                viewed = f"{summed}_view"
                if k not in block_shapes:
                    block_shapes[k] = f"blocks_{k}x{block}"
                    view = [0] * (ranks[x] - 1) + [k // block, block]  # 0: keep that dimension
                    new_inits.append(numpy_helper.from_array(np.array(view, np.int64), block_shapes[k]))
                nodes.append(helper.make_node("Reshape", [x, block_shapes[k]], [viewed], viewed))
                nodes.append(helper.make_node("ReduceSum", [viewed, LAST_AXIS], [summed], summed, keepdims=0))
                widths[x] = k + k // block
            else:  # K not whole blocks, or x's rank unknown: a 0/1 matrix sums the blocks
                if k not in sum_weights:
                    sum_weights[k] = f"blocksums_{k}x{block}_{np.dtype(dtype).name}"
                    matrix = _block_sum_matrix(k, block, dtype)
                    new_inits.append(numpy_helper.from_array(matrix, sum_weights[k]))
                nodes.append(helper.make_node("MatMul", [x, sum_weights[k]], [summed], summed))
                widths[x] = k + pad + sums
            nodes.append(helper.make_node("Concat", [x, summed], [extended[x]], extended[x], axis=-1))
        b = quantize(w.T, block)
        blocks, on_grid = blocks + b.scale.size, on_grid + _blocks_on_grid(w.T, b)
        c = np.zeros((n, sums))
        c[:, : b.correction.shape[1]] = b.correction
        cq, cs, cz = _integer_blocks(c, block)
        q = np.concatenate([b.q, cq], axis=1)
        scale = np.concatenate([b.scale, cs], axis=1).astype(dtype)
        zero = _pack(np.concatenate([b.zero, cz], axis=1))
        name = f"{node.name}_Q4"
        new_inits += [
            numpy_helper.from_array(_pack(q), f"{name}_weight"),
            numpy_helper.from_array(scale.reshape(-1), f"{name}_scales"),
            numpy_helper.from_array(zero.reshape(-1), f"{name}_zero_points"),
        ]
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                [extended[x], f"{name}_weight", f"{name}_scales", f"{name}_zero_points"],
                list(node.output),
                name,
                domain="com.microsoft",
                K=widths[x],
                N=n,
                bits=4,
                block_size=block,
                accuracy_level=accuracy_level,
            )
        )
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(new_inits)
    if block_shapes:
        model.graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), LAST_AXIS))
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    g.drop_unused(model)
    return model, on_grid / max(blocks, 1)


def _blocks_on_grid(w_t: np.ndarray, b: Blocks) -> int:
    """Blocks whose weights the 4-bit grid reproduces to 0.1 % of a step."""
    n, k = w_t.shape
    err = np.abs(dequantize(b)[:, :k] - w_t)
    err = np.pad(err, ((0, 0), (0, b.q.shape[1] * b.q.shape[2] - k))).reshape(b.q.shape)
    return int((err.max(-1) <= 1e-3 * b.scale).sum())


def _block_sum_matrix(k: int, block: int, dtype: np.dtype) -> np.ndarray:
    """(K, pad + sums) 0/1: x @ it gives `pad` zeros (completing x's last block), then each block's
    input sum, then zeros to a whole block."""
    pad, sums = extra_columns(k, block)
    m = np.zeros((k, pad + sums), dtype)
    for j in range(-(-k // block)):
        m[j * block : (j + 1) * block, pad + j] = 1
    return m
