"""`int4-dq`: INT4 weight-only as TensorRT takes it - block-wise DequantizeLinear feeding MatMul -
that keeps a float minimum per block (GGUF's Q4_1) exactly.

TensorRT's INT4 is weight-only and symmetric: a `DequantizeLinear` (opset 21) of a *signed* int4
weight with per-block scales (`block_size`, scales of shape (K / block, N)) and no zero point (its
zero points must be 0), directly feeding the weight input of a MatMul / Gemm, which it fuses into one
INT4 weight-only GEMM. A float minimum cannot ride on the DequantizeLinear (its zero point has x's
integer type, and TensorRT refuses non-zero ones), and a block-wise Add between the DequantizeLinear
and the MatMul breaks the pattern TensorRT fuses (it would constant-fold the weights to floats, or
refuse). So each block's weights w = d * q + m (q = 0..15, GGUF's Q4_1) are written as

    w = d * (q - 8) + (m + 8 d)   =   DQ(q - 8, d)   +   m'          (q - 8: int4 in -8..7)

and the minimum goes on the block sums of the input, as llama.cpp's Q4_1 kernels and float_min.py
do:

    y = MatMul(x, DequantizeLinear(q8, d, axis=0, block_size=32))      the INT4 GEMM TensorRT fuses
      + MatMul(ReduceSum(Reshape(x, (..., K / 32, 32)), -1), m')        (K / 32, N): 1/32 of the GEMM
    (+ Add of the two: an elementwise epilogue)

`d * (q - 8)` is exact in float32 (an fp16 step times a 4-bit integer), and when m' is exact in
float32 the effective weight d * (q - 8) + m' is the float32 rounding of the same real number as the
GGUF dequantization's d * q + m: the SAME float, bit for bit (a test feeds the identity matrix
through ONNX Runtime and compares). The step is stored as GGUF's fp16 step when that reproduces the
block (SmolLM2: every layer block), else as the float32 (max - min) / 15.

The head: 8-bit symmetric blocks of 32 (`DequantizeLinear` of int8, no zero point), GGUF's Q8_0 grid,
exact for SmolLM2's head; `--head-bits 4` stores it as the layers. (TensorRT documents weight-only
quantization for INT4; an int8 block-wise weight DQ is parsed by TensorRT 10's block quantization,
but whether it fuses as weight-only is for the GPU check to confirm: docs/portable-decoder.md.)

Everything is standard ONNX, so the decoder's portable graph (export/decoder_portable.py) is derived
from this one and shares its weights file: that is TensorRT's INT4 decoder. On the CPU ONNX Runtime
runs both graphs at its "basic" level: DequantizeLinear + MatMul as the ONNX spec defines them (its
"all" level would fuse them into MatMulNBits with int8 activations, which TensorRT does not do).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vinci_edge.quantization import float_min
from vinci_edge.quantization import graph as g
from vinci_edge.quantization.handler import StageJob, StageResult

BLOCK = 32
OPSET = 21  # DequantizeLinear with block_size and int4
SHIFT = 8  # q (0..15) - 8: TensorRT's signed int4


def _fp16_steps(w: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Per block, GGUF's fp16 step when it reproduces the block's float32 weights on q = 0..15 from
    the minimum, else the float32 step (w: (N, nb, B) float64 of float32 values)."""
    s16 = step.astype(np.float16).astype(np.float64)
    s16[s16 == 0] = 1.0
    q = np.clip(np.rint((w - lo[..., None]) / s16[..., None]), 0, float_min.LEVELS)
    back = (s16[..., None] * q + lo[..., None]).astype(np.float32)
    exact = (back == w.astype(np.float32)).all(-1)
    return np.where(exact, s16, step.astype(np.float32).astype(np.float64))


def float_min_blocks(w_t: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(N, K) weights as int4 q - 8 (N, K), steps d (N, K / block) and shifted minimums m' (N, K /
    block) with w = d * (q - 8) + m' (module docstring); and the fraction of blocks reproduced
    exactly in float32 (1.0 for a checkpoint dequantized from Q4_1)."""
    n, k = w_t.shape
    w = w_t.astype(np.float64).reshape(n, k // block, block)
    lo, hi = w.min(-1), w.max(-1)
    step = (hi - lo) / float_min.LEVELS
    step[step == 0] = 1.0  # a constant block: q = 0, w = m
    step = _fp16_steps(w, lo, step)
    q = np.clip(np.rint((w - lo[..., None]) / step[..., None]), 0, float_min.LEVELS)
    shifted = lo + SHIFT * step
    m = shifted.astype(np.float32)
    back = (step[..., None] * (q - SHIFT) + m[..., None].astype(np.float64)).astype(np.float32)
    exact = ((back == w.astype(np.float32)).all(-1) & (m == shifted)).mean()
    return (q - SHIFT).astype(np.int8).reshape(n, k), step.astype(np.float32), m, float(exact)


def symmetric_int8_blocks(w_t: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(N, K) weights as int8 q (N, K) and steps (N, K / block), w = d * q (GGUF's Q8_0, with its fp16
    step where that reproduces the block), and the fraction of blocks reproduced exactly."""
    n, k = w_t.shape
    w = w_t.astype(np.float64).reshape(n, k // block, block)
    step = np.abs(w).max(-1) / 127
    step[step == 0] = 1.0
    s16 = step.astype(np.float16).astype(np.float64)
    s16[s16 == 0] = 1.0
    q16 = np.clip(np.rint(w / s16[..., None]), -127, 127)
    exact16 = ((s16[..., None] * q16).astype(np.float32) == w.astype(np.float32)).all(-1)
    step = np.where(exact16, s16, step.astype(np.float32).astype(np.float64))
    q = np.clip(np.rint(w / step[..., None]), -127, 127)
    exact = ((step[..., None] * q).astype(np.float32) == w.astype(np.float32)).all(-1).mean()
    return q.astype(np.int8).reshape(n, k), step.astype(np.float32), float(exact)


def _int4_tensor(name: str, q: np.ndarray) -> onnx.TensorProto:
    """A signed int4 initializer of q's shape, two values a byte, the first in the low nibble."""
    flat = (q.reshape(-1).astype(np.int16) & 0xF).astype(np.uint8)
    return helper.make_tensor(name, TensorProto.INT4, q.shape, float_min._pack(flat).tobytes(), raw=True)


def _block_sums(x: str, k: int, rank: int | None, block: int, dtype, new: list, nodes: list) -> str:
    """(..., K / block): x's block sums, by Reshape + ReduceSum where x's rank is known, else by a 0/1
    MatMul (named as float_min's, so no pass takes it for a linear layer)."""
    out = f"{x}{g.BLOCK_SUMS}"
    if rank is not None:
        view = f"{out}_shape"
        new.append(numpy_helper.from_array(np.array([0] * (rank - 1) + [k // block, block], np.int64), view))
        axis = f"{out}_axis"
        new.append(numpy_helper.from_array(np.array([-1], np.int64), axis))
        nodes.append(helper.make_node("Reshape", [x, view], [f"{out}_view"], f"{out}_view"))
        nodes.append(helper.make_node("ReduceSum", [f"{out}_view", axis], [out], out, keepdims=0))
    else:
        ones = f"{out}_matrix"
        matrix = np.zeros((k, k // block), dtype)
        matrix[np.arange(k), np.arange(k) // block] = 1
        new.append(numpy_helper.from_array(matrix, ones))
        nodes.append(helper.make_node("MatMul", [x, ones], [out], out))
    return out


def replace_matmuls(
    model: onnx.ModelProto, names: list[str], head: str | None, head_bits: int, block: int = BLOCK
) -> dict:
    """Rewrite the weight MatMuls `names` (the head `head` at `head_bits`) in place as block-wise
    DequantizeLinear + MatMul (module docstring); returns counts for the manifest. A layer whose
    input width is not whole blocks stays float (none in the Llama-family decoders)."""
    inits = g.initializer_map(model)
    ranks = g.ranks(model)
    chosen = {n.name: n for n in g.weight_matmuls(model) if n.name in names}
    sums: dict[str, str] = {}
    nodes: list[onnx.NodeProto] = []
    new: list[onnx.TensorProto] = []
    stats = {"layers": 0, "left_float": [], "blocks": 0, "exact_blocks": 0.0}
    for node in model.graph.node:
        if node.name not in chosen:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])  # (K, N)
        k, n = w.shape
        if k % block:
            stats["left_float"].append(node.name)
            nodes.append(node)
            continue
        x, y, name = node.input[0], node.output[0], f"{node.name}_DQ"
        dq_out = f"{name}_weight_dq"
        if node.name == head and head_bits == 8:
            q, step, exact = symmetric_int8_blocks(w.T, block)
            new.append(numpy_helper.from_array(np.ascontiguousarray(q.T), f"{name}_weight"))
            minimum = None
        else:
            q, step, minimum, exact = float_min_blocks(w.T, block)
            new.append(_int4_tensor(f"{name}_weight", np.ascontiguousarray(q.T)))
        new.append(numpy_helper.from_array(np.ascontiguousarray(step.T.astype(w.dtype)), f"{name}_scale"))
        nodes.append(
            helper.make_node(
                "DequantizeLinear", [f"{name}_weight", f"{name}_scale"], [dq_out], f"{name}_dq", axis=0,
                block_size=block,
            )
        )  # fmt: skip
        stats["layers"] += 1
        stats["blocks"] += step.size
        stats["exact_blocks"] += exact * step.size
        if minimum is None:
            nodes.append(helper.make_node("MatMul", [x, dq_out], [y], name))
            continue
        if x not in sums:
            sums[x] = _block_sums(x, k, ranks.get(x), block, w.dtype, new, nodes)
        new.append(numpy_helper.from_array(np.ascontiguousarray(minimum.T.astype(w.dtype)), f"{name}_min"))
        nodes.append(helper.make_node("MatMul", [x, dq_out], [f"{y}_q"], name))
        nodes.append(helper.make_node("MatMul", [sums[x], f"{name}_min"], [f"{y}_m"], f"{name}_min"))
        nodes.append(helper.make_node("Add", [f"{y}_q", f"{y}_m"], [y], f"{name}_add"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(new)
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = max(o.version, OPSET)
    g.drop_unused(model)
    stats["exact_blocks"] = round(stats["exact_blocks"] / max(stats["blocks"], 1), 6)
    return stats


class Int4Dq:
    precision = "int4-dq"
    tool = "onnx"

    def needs_calibration(self, job: StageJob) -> bool:
        return False

    def check_available(self) -> None:
        return None

    def run(self, job: StageJob) -> StageResult:
        model = g.load(job.src)
        g.name_nodes(model)
        head = g.output_head(model)
        head_bits = job.head_bits if head is not None else None
        job.say(
            f"{job.stage}: INT4 DequantizeLinear + MatMul (blocks of {BLOCK}, float minimum)"
            + (f", head {head_bits}-bit" if head_bits else "")
        )
        layers = [n.name for n in g.weight_matmuls(model)]
        stats = replace_matmuls(model, layers, head.name if head is not None else None, head_bits or 8)
        if stats["exact_blocks"] > 0.99:
            job.say(f"{job.stage}: {100 * stats['exact_blocks']:.1f}% of the blocks kept exactly")
        data = g.save(model, job.dst)
        details = {
            "weights": f"int4 blocks of {BLOCK} (DequantizeLinear, no zero point) + a float minimum per "
            "block on the input's block sums",
            # 1.0: every block's weights come back bit for bit (a checkpoint dequantized from Q4_1)
            "blocks_exact": stats["exact_blocks"],
            "layers": stats["layers"],
            "left_float": stats["left_float"],
            "head": None
            if head is None
            else (f"{head_bits}-bit " + ("symmetric blocks" if head_bits == 8 else "blocks, float minimum"))
            + f" of {BLOCK} ({head.name})",
            "opset": OPSET,
            "ops": g.op_counts(model),
        }
        method = "weight-only RTN, float minimum (DequantizeLinear + MatMul)"
        # "basic": ONNX Runtime's "all" level fuses DequantizeLinear + MatMul into its MatMulNBits with
        # int8 activations (accuracy level 4), which is not TensorRT's arithmetic and moved SmolLM2's
        # logits 2.5 % (and the fused and portable graphs apart by 4 %, fused differently)
        return StageResult(method, self.tool, onnx.__version__, data, "basic", details)
