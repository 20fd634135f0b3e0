"""FP8 (E4M3) Q/DQ for TensorRT on FP8 GPUs (Ada, Hopper, Thor), by ModelOpt.

Weights are stored as float8e4m3fn with per-channel scales behind a DequantizeLinear; activations get
a static per-tensor scale from the calibration set. E4M3 keeps a relative precision of 2^-4 over a
wide range, so outliers hurt it far less than INT8: no SmoothQuant is needed. The LM head stays
fp32, as in `int8`: on SmolLM2 an FP8 head raised perplexity (docs/quantization.md, 'Static INT8
and FP8: the LM head, SmoothQuant and the down projections'). Even so the decoder misses the 2 %
goal on SmolLM2 unless `--keep-fp32` leaves much of the MLP in fp32 (the FP8 rows of
docs/quantization.md, 'Results').

ONNX Runtime on the CPU loads these graphs only at ORT_ENABLE_BASIC (at the default level a fusion
turns the FP8 Q/DQ into an INT8-only operator and the session fails): the stage's manifest entry
says `"ort_optimization": "basic"`, which the runtime's stage runner honours. That is how the
accuracy is measured here; the speed is TensorRT's business.
"""

from __future__ import annotations

from vinci_edge.quantization import graph as g
from vinci_edge.quantization import modelopt_onnx
from vinci_edge.quantization.handler import StageJob, StageResult


class Fp8(modelopt_onnx.StaticQdqHandler):
    precision = "fp8"

    def run(self, job: StageJob) -> StageResult:
        model = g.load(job.src)
        g.name_nodes(model)
        _, data, common = modelopt_onnx.static_qdq(
            job, model, "fp8", "FP8 E4M3 Q/DQ", self.quantize_head, "basic"
        )
        details = {
            "weights": "float8e4m3fn per output channel (DequantizeLinear)",
            "activations": "float8e4m3fn per tensor, static ('max' calibration)",
            **common,
        }
        return StageResult(
            "static Q/DQ (E4M3)", self.tool, modelopt_onnx.version() or "?", data, "basic", details
        )
