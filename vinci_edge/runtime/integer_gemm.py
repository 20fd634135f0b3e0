"""Is ONNX Runtime's integer GEMM exact on this CPU? A check run before trusting a prefill graph.

`int8-compute`'s prefill graph (quantization/int8_compute.py) multiplies 8-bit activations by 8-bit
weights in an integer GEMM whose int32 sums are exact by definition: the accuracy of the engine is
that of its quantization, the same on every CPU. Which kernel ONNX Runtime's MLAS picks depends on
the CPU (AVX2 `vpmaddubsw`, AVX-512 / AVX-VNNI `vpdpbusd`, AMX tiles), and a kernel can be wrong:
`vpmaddubsw` saturates when both operands use their full 8-bit range (why `--int8-range reduced`
exists), and ONNX Runtime has had wrong u8 x s8 results on some CPUs (docs/quantization.md). So the
runtime checks, once per process, operator and activation range: the product in the prefill
graph's layout at a few shapes, against numpy's int64 product. Two layouts exist:
"MatMulIntegerToFloat" (today's: activations uint8 as `A`, the transposed weights uint8 as a
constant `B`, zero points 128, float out) and "MatMulInteger" (engines written before: the weights
uint8 as a constant `A` with zero point 128, int8 activations as `B`, int32 out). A CPU where it
is not exact runs every append on the decode graph (block-wise MatMulNBits: slower prefill, the
engine's decode accuracy) and says so.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from vinci_edge.host import cpu_name
from vinci_edge.runtime import onnx_bytes as ob

# (weight rows N, width K, positions M): rows below, at and past the 16 / 32 / 64-row tiles of the
# kernels, widths that are multiples of the 32-channel block int8-compute requires, positions from a
# short append to a clip's prompt; then the shipped task model's four layer shapes at its prompt's
# length (q/k/v, o_proj, gate/up, down_proj: the model whose int8-compute answers differed between
# two CPUs, docs/quantization.md) and a 0.5B-shaped q/k/v projection.
SHAPES = (
    (32, 64, 16),
    (48, 128, 33),
    (96, 256, 100),
    (130, 96, 257),
    (256, 512, 64),
    (256, 128, 363),
    (128, 128, 363),
    (768, 128, 363),
    (128, 384, 363),
    (1152, 896, 48),
)
FULL_LEVELS = 127


ITOF, INTEGER = "MatMulIntegerToFloat", "MatMulInteger"  # manifest.INTEGER_KERNELS


@dataclass(frozen=True)
class GemmCheck:
    kernel: str  # the operator checked
    levels: int  # activations in [-levels, levels], as the engine quantizes them
    exact: bool
    wrong: int  # int32 results that differ from numpy's
    total: int
    worst_shape: tuple[int, int, int] | None  # (N, K, M) with the most wrong results
    cpu: str
    onnxruntime: str

    def note(self) -> str:
        """One line for an answer's warnings."""
        n, k, m = self.worst_shape or (0, 0, 0)
        return (
            f"ONNX Runtime {self.onnxruntime}'s integer GEMM ({self.kernel}) is not exact on this "
            f"CPU ({self.cpu}): {self.wrong} of {self.total} results wrong (worst at {n}x{k} weights, "
            f"{m} positions, activations in +-{self.levels}); the prefill runs on the decode graph "
            f"instead (slower time to first token, the decode graph's accuracy). `vinci-edge doctor` "
            f"shows the check; another onnxruntime version may pass it."
        )


@functools.cache
def check_integer_gemm(levels: int = FULL_LEVELS, kernel: str = ITOF, seed: int = 0) -> GemmCheck:
    """Run the check (cached: once per process, operator and range). Weights span uint8 [1, 255]
    (int8 [-127, 127] + 128, as int8_compute stores them), activations int8 [-levels, levels]
    (+ 128 as uint8 for MatMulIntegerToFloat). Every exact result is below 2^24 in magnitude, so
    the float output of MatMulIntegerToFloat holds it exactly too."""
    import onnxruntime as ort

    if not 1 <= levels <= 127:
        raise ValueError(f"activation levels {levels} outside [1, 127]")
    if kernel not in (ITOF, INTEGER):
        raise ValueError(f"unknown integer GEMM operator {kernel!r}")
    rng = np.random.default_rng(seed)
    wrong = total = worst = 0
    worst_shape = None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    for n, k, m in SHAPES:
        w = rng.integers(1, 256, (n, k), dtype=np.uint8)
        x = rng.integers(-levels, levels + 1, (m, k), dtype=np.int8)
        want = x.astype(np.int64) @ (w.astype(np.int64) - 128).T  # (M, N)
        if kernel == ITOF:
            session = ort.InferenceSession(_itof_graph(w), options, providers=["CPUExecutionProvider"])
            got = session.run(None, {"A": (x.astype(np.int16) + 128).astype(np.uint8)})[0]
        else:
            session = ort.InferenceSession(_integer_graph(w), options, providers=["CPUExecutionProvider"])
            got = session.run(None, {"B": np.ascontiguousarray(x.T)})[0].T
        bad = int(np.count_nonzero(got != want))
        wrong, total = wrong + bad, total + want.size
        if bad > worst:
            worst, worst_shape = bad, (n, k, m)
    return GemmCheck(kernel, levels, wrong == 0, wrong, total, worst_shape, cpu_name(), ort.__version__)


def _itof_graph(w: np.ndarray) -> bytes:
    """MatMulIntegerToFloat(A (M, K) uint8, B = w^T (K, N) uint8, scales 1, zero points 128)."""
    n, k = w.shape
    return ob.model(
        [ob.node("MatMulIntegerToFloat", ["A", "B", "one", "ones", "zp", "zp"], ["Y"], ob.MS_DOMAIN)],
        [
            ob.tensor("B", np.ascontiguousarray(w.T)),
            ob.tensor("one", np.array(1.0, np.float32)),
            ob.tensor("ones", np.ones(n, np.float32)),
            ob.tensor("zp", np.array(128, np.uint8)),
        ],
        [ob.value_info("A", ["m", k], ob.UINT8)],
        [ob.value_info("Y", ["m", n], ob.FLOAT)],
        "vinci_edge_integer_gemm_check",
        17,
        {ob.MS_DOMAIN: 1},
    )


def _integer_graph(w: np.ndarray) -> bytes:
    """MatMulInteger(A = w (N, K) uint8 with zero point 128, B (K, M) int8) -> (N, M) int32."""
    n, k = w.shape
    return ob.model(
        [ob.node("MatMulInteger", ["A", "B", "azp"], ["Y"])],
        [ob.tensor("A", w), ob.tensor("azp", np.array(128, np.uint8))],
        [ob.value_info("B", [k, "m"], ob.INT8)],
        [ob.value_info("Y", [n, "m"], ob.INT32)],
        "vinci_edge_integer_gemm_check",
        17,
    )
