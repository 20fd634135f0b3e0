"""INT8: static Q/DQ for TensorRT (ModelOpt), and dynamic INT8 for ONNX Runtime on the CPU.

`int8` (TensorRT): ModelOpt inserts Q/DQ pairs on the activation and weight of every linear layer,
with activation ranges from the calibration set ('max' calibration) and per-channel weight scales.
TensorRT fuses each pair into an INT8 GEMM. On the CPU such graphs run ~6x slower than fp32, so this
is where their accuracy is measured, not their speed. The LLM's per-tensor activation scales suffer
from its outlier channels; `--smoothquant ALPHA` smooths them first (smoothquant.py).

The LM head stays fp32 in `int8` and `fp8` (as ModelOpt's own PyTorch recipes leave `*lm_head*`
unquantized), and is not smoothed: a high alpha needs the head left out (on SmolLM2 a smoothed
int8 head is what made alpha 0.8 collapse). Static per-tensor INT8 still misses the 2 % goal on
that LLM: most of the loss is in the MLP down projections, whose input (silu(gate) * up) carries
the massive activations of a few tokens; a per-tensor scale sized for them leaves the other tokens
a handful of levels. SmoothQuant moves channel outliers, not token outliers, so it helps only part
of the way; `--keep-fp32` leaves such layers in fp32. The measurements: docs/quantization.md,
'Static INT8 and FP8: the LM head, SmoothQuant and the down projections'.

`int8-dynamic` (ONNX Runtime CPU), no calibration. Two methods (compared in docs/quantization.md,
'Dynamic INT8: two methods'):

- "matmulnbits" (the default): `MatMulNBits` with bits=8 - int8 weights in blocks of 32 input
  channels, and `accuracy_level=4`, which quantizes the activations to int8 at run time per row and
  block and runs integer dot products. Its accuracy is the same whether the tokens come one at a
  time (decode) or all at once (prefill).
- "matmul-integer": `onnxruntime.quantization.quantize_dynamic` (MatMul only, per-channel weights):
  DynamicQuantizeLinear + MatMulInteger, fused into DynamicQuantizeMatMul. Its activation scale is
  ONE per tensor, i.e. shared by every position of a prefill: the few positions with huge
  activations (the chat template's first tokens) crush the others, so a prefill loses much more
  than decode does. Kept for comparison (benchmarks, report).
  It needs `reduce_range=True` (7-bit weights) on x86 without VNNI: ONNX Runtime's u8 x s8 kernel sums
  pairs of products into int16 (vpmaddubsw), which saturates with full-range per-channel weights.
"""

from __future__ import annotations

from collections.abc import Callable

from vinci_edge import stages as st
from vinci_edge.quantization import graph as g
from vinci_edge.quantization import modelopt_onnx
from vinci_edge.quantization.handler import StageJob, StageResult


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def smoothed_model(job: StageJob, keep_head: bool = False, skip: Callable[[str], bool] | None = None):
    """The stage's fp32 graph, SmoothQuant-smoothed when asked (decoder only; the LM head too
    unless `keep_head`, i.e. it stays fp32; none of the linear layers `skip` names); + the report."""
    from vinci_edge.quantization.smoothquant import smoothquant

    model = g.load(job.src)
    g.name_nodes(model)
    if job.smoothquant is None or job.stage != st.DECODER:
        return model, None
    head = g.output_head(model) if keep_head else None
    only = {n.name for n in g.weight_matmuls(model)} - ({head.name} if head is not None else set())
    if skip is not None:
        only = {name for name in only if not skip(name)}
    job.say(f"{job.stage}: SmoothQuant (alpha {job.smoothquant})")
    report = smoothquant(
        model,
        job.smoothquant,
        job.stage,
        job.calibration.for_stage(job.stage),
        job.spec,
        job.workdir / "smoothquant",
        job.say,
        only,
    )
    return model, report


class Int8Dynamic:
    precision = "int8-dynamic"
    tool = "onnxruntime"
    BLOCK = 32

    def __init__(self, method: str = "matmulnbits") -> None:
        if method not in ("matmulnbits", "matmul-integer"):
            raise ValueError(f"unknown int8-dynamic method {method!r}")
        self.method = method

    def needs_calibration(self, job: StageJob) -> bool:
        return job.smoothquant is not None and job.stage == st.DECODER

    def check_available(self) -> None:
        return None

    def run(self, job: StageJob) -> StageResult:
        model, sq = smoothed_model(job)
        result = self._matmulnbits(job, model) if self.method == "matmulnbits" else self._integer(job, model)
        if sq:
            result.details["smoothquant"] = sq.to_dict()
        return result

    def _matmulnbits(self, job: StageJob, model) -> StageResult:
        job.say(f"{job.stage}: dynamic INT8 (MatMulNBits 8-bit, block {self.BLOCK}, int8 activations)")
        q = g.matmul_nbits(model, 8, self.BLOCK, symmetric=True)
        data = g.save(q, job.dst)
        details = {
            "weights": f"int8 in blocks of {self.BLOCK} input channels (one scale per block)",
            "activations": "int8 per row and block, computed at run time (accuracy_level 4)",
            "ops": g.op_counts(q),
        }
        return StageResult("dynamic (MatMulNBits 8-bit)", self.tool, _ort_version(), data, "all", details)

    def _integer(self, job: StageJob, model) -> StageResult:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        job.workdir.mkdir(parents=True, exist_ok=True)
        src = job.workdir / "input.onnx"
        g.save(model, src)
        del model
        job.say(f"{job.stage}: dynamic INT8 (ONNX Runtime quantize_dynamic, MatMul, per-channel)")
        out = job.workdir / "output.onnx"
        with g.quiet_tools():
            quantize_dynamic(
                str(src),
                str(out),
                op_types_to_quantize=["MatMul"],
                per_channel=True,
                reduce_range=True,
                weight_type=QuantType.QInt8,
                use_external_data_format=True,
                extra_options={
                    # Only weight matmuls: activation x activation products (tower attention) stay fp32.
                    "MatMulConstBOnly": True,
                    # ONNX shape inference cannot type the outputs of contrib ops (GroupQueryAttention...).
                    "DefaultTensorType": 1,
                },
            )
        model = g.load(out)
        data = g.save(model, job.dst)
        details = {
            "weights": "int8 per output channel, 7-bit range (reduce_range, see int8.py)",
            "activations": "uint8 per tensor, computed at run time",
            "ops": g.op_counts(model),
        }
        return StageResult("dynamic (MatMulInteger)", self.tool, _ort_version(), data, "all", details)


class Int8Static(modelopt_onnx.StaticQdqHandler):
    precision = "int8"

    def run(self, job: StageJob) -> StageResult:
        model, sq = smoothed_model(job, keep_head=not self.quantize_head)
        _, data, common = modelopt_onnx.static_qdq(
            job, model, "int8", "static INT8 Q/DQ", self.quantize_head, "basic"
        )
        details = {
            "weights": "int8 per output channel (DequantizeLinear)",
            "activations": "int8 per tensor, static ('max' calibration)",
            **common,
        }
        if sq:
            details["smoothquant"] = sq.to_dict()
        method = "static Q/DQ" + (f" + SmoothQuant alpha={job.smoothquant}" if sq else "")
        # 'basic': ONNX Runtime's CPU fusions turn Q/DQ into u8 x s8 kernels that saturate on AVX2
        # (see Int8Dynamic); 'basic' computes exactly what the Q/DQ graph says, as TensorRT does.
        return StageResult(method, self.tool, modelopt_onnx.version() or "?", data, "basic", details)
