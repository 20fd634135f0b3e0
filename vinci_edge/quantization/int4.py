"""INT4 weight-only, block-wise: MatMulNBits for ONNX Runtime, ModelOpt AWQ for TensorRT.

`int4` (ONNX Runtime, CPU and CUDA providers): every linear layer becomes a `MatMulNBits` with 4-bit
weights in blocks of 32 input channels, each block with its own scale and zero point (asymmetric:
on SmolLM2, 1022 tokens of GPL-3 from token 256, symmetric blocks cost +38 % perplexity,
asymmetric +28 %; from token 0, the accuracy report's default window, asymmetric is +20 %).
`accuracy_level=4` lets the CPU kernel quantize the activations to int8 per block and use integer
dot products - measured 25x faster than the fp32-compute path for the 8-bit head, at no measurable
accuracy cost.

The output head stays at 8 bits (MatMulNBits bits=8, same blocks): a 4-bit head destroys a small
LLM (peers.md), and GGUF keeps it at 8 bits too. The head is found as the MatMul producing `logits`.
No calibration: round-to-nearest (block min/max).

`int4-awq` (TensorRT): ModelOpt's INT4 AWQ - activation-aware per-channel scales searched on the
calibration set (awq_lite), then 4-bit blocks behind a DequantizeLinear (opset 21), the head at 8 bits
per channel (ModelOpt's `layers_8bit`). ONNX Runtime runs the DequantizeLinear + MatMul graph on
the CPU, which is how its accuracy is measured here.

SmolLM2's "fp32" weights are themselves 4-bit: the checkpoint is dequantized from a Q4_1 GGUF, and
every weight lies exactly on a grid of 16 levels per block of 32 input channels whose ends are the
block's min and max. Q4_1 stores that min as a float; MatMulNBits' integer zero point cannot
hit it, so `int4` re-rounds every weight onto a shifted grid (the +20 % above is that second
rounding). MatMulNBits does accept float zero points, and with them reproduces such weights
exactly - but ONNX Runtime's CPU kernel then dequantizes per call: 2.0-2.7 ms against 46 us for a
1536 x 576 layer (measured), slower than fp32, so it is not used.

Older figures, from a single 300-token window (too short to tell a few percent apart: the
accuracy report now uses 1022 tokens and gives an interval) - SmolLM2-135M, decoder only, GPL-3,
fp32 perplexity 20.93:
`int4` 21.9 (+4.6%); `int4-awq` 27.4 with blocks of 128 (4 calibration requests, default sources),
where ModelOpt's plain round-to-nearest on the same symmetric blocks gives 33.1: the AWQ search
recovers much of the loss. The rest of the gap to `int4` is symmetric blocks (TensorRT takes no
zero points; MatMulNBits keeps one per block of 32). Blocks of 64 and 32 gave 31.7 and 30.6, i.e.
no better - presumably the search on 4 x 239 positions is noisy (not verified with a larger set).

awq_lite's scale search needs every linear layer's input on the calibration set. By default
ModelOpt re-runs the whole graph once per layer and sample to get it: on SmolLM2's decoder
(121 linear layers, 4 samples) that is ~480 forward passes. Its "fast path" runs each sample once
and keeps every layer's input in memory instead - (positions x in-features x 4 bytes) summed over
the layers, exactly computable for the decoder, ~0.4 GB for SmolLM2 at 4 x 240 positions, but
~14 GB for a 7B LLM at 8 x 512. It is taken when that estimate is under AWQ_CACHE_BYTES; the towers
(whose activation count per sample the graph does not state) keep the re-running path.
"""

from __future__ import annotations

import numpy as np

from vinci_edge.quantization import graph as g
from vinci_edge.quantization import modelopt_onnx
from vinci_edge.quantization.handler import StageJob, StageResult

BLOCK = 32
HEAD_BITS = 8
AWQ_BLOCK = 128  # TensorRT's INT4 weight-only kernels and ModelOpt's default
AWQ_METHOD = "awq_lite"
AWQ_MAX_SAMPLES = 8  # the per-layer scale search re-runs each layer's matmul per sample and alpha
AWQ_CACHE_BYTES = 4 << 30  # the most memory the fast path may keep (module docstring)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


class Int4:
    precision = "int4"
    tool = "onnxruntime"

    def needs_calibration(self, job: StageJob) -> bool:
        return False

    def check_available(self) -> None:
        try:
            import onnx_ir  # noqa: F401 - matmul_nbits_quantizer imports it
        except ImportError as exc:
            from vinci_edge.errors import MissingDependencyError

            raise MissingDependencyError(
                "int4 needs onnx_ir for ONNX Runtime's MatMulNBits quantizer", hint="pip install onnx-ir"
            ) from exc

    block = BLOCK  # input channels per 4-bit block
    wide: tuple[str, ...] = ()  # node-name suffixes of the layers kept at 8 bits besides the head
    method = "weight-only RTN (MatMulNBits)"

    def run(self, job: StageJob) -> StageResult:
        model = g.load(job.src)
        g.name_nodes(model)
        head = g.output_head(model)
        heads = [head.name] if head is not None else []
        wide = [n.name for n in g.weight_matmuls(model) if n.name.endswith(self.wide) and n.name not in heads]
        job.say(
            f"{job.stage}: INT4 MatMulNBits (block {self.block}, asymmetric)"
            + (f", {len(wide)} MLP gate/up layers 8-bit" if wide else "")
            + (", head 8-bit" if heads else "")
        )
        model = g.matmul_nbits(model, 4, self.block, symmetric=False, nodes_to_exclude=heads + wide)
        if heads or wide:
            model = g.matmul_nbits(model, HEAD_BITS, BLOCK, symmetric=True, nodes_to_include=heads + wide)
        data = g.save(model, job.dst)
        details = {
            "weights": f"4-bit blocks of {self.block} (scale + zero point per block)",
            "head": f"{HEAD_BITS}-bit blocks of {BLOCK} ({heads[0]})" if heads else None,
            "accuracy_level": g.NBITS_ACCURACY_LEVEL,
            "ops": g.op_counts(model),
        }
        if self.wide:  # None where a stage has none of them (the towers)
            details["8bit_layers"] = (
                f"{len(wide)} MLP gate/up projections, 8-bit blocks of {BLOCK}" if wide else None
            )
        return StageResult(self.method, self.tool, _ort_version(), data, "all", details)


class Int4Mixed(Int4):
    """`int4-mixed` (ONNX Runtime): 4-bit blocks of 16 instead of 32, and the decoder's MLP gate/up
    projections - half its linear weights, and the most sensitive kind - at 8 bits (blocks of 32),
    as GGUF's Q4_K_M keeps some tensors at more bits. SmolLM2, 1022 tokens of GPL-3: +5.5 % (95 %:
    +0.1 to +11) against `int4`'s +20 %; CPU decode 2.16x fp32 against `int4`'s 2.72x (bench_quant,
    AMD EPYC, 2 threads). Blocks of 16 alone gave +11 %, 8-bit gate/up alone +10 %."""

    precision = "int4-mixed"
    block = 16
    wide = (".gu",)  # the decoder's fused MLP gate/up projections (export/decoder.py)
    method = "weight-only RTN, mixed 4/8-bit (MatMulNBits)"


def same_length(samples: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Cut every decoder sample to the shortest one's positions. awq_lite concatenates each layer's
    activations over the samples along axis 0 before flattening them to (tokens, channels), so
    prefills of different lengths fail there; a prefix keeps each request as the decoder sees it
    from position 0 (chat template, media tokens, then text)."""
    n = min(int(s["inputs_embeds"].shape[1]) for s in samples)
    return [{"inputs_embeds": s["inputs_embeds"][:, :n]} for s in samples]


def awq_cache_bytes(model, samples: list[dict[str, np.ndarray]]) -> int:
    """Bytes awq_lite's fast path keeps for the decoder: every linear layer's fp32 input at every
    calibration position."""
    inits = g.initializer_map(model)
    positions = sum(int(s["inputs_embeds"].shape[1]) for s in samples)
    return 4 * positions * sum(int(inits[n.input[1]].dims[0]) for n in g.weight_matmuls(model))


class Int4Awq(modelopt_onnx.ModelOptHandler):
    precision = "int4-awq"

    def run(self, job: StageJob) -> StageResult:
        from vinci_edge.quantization.calibration import make_reader

        model = g.load(job.src)
        g.name_nodes(model)
        head = g.output_head(model)
        samples = job.calibration.for_stage(job.stage)[:AWQ_MAX_SAMPLES]
        if job.stage == "decoder":
            samples = same_length(samples)
        job.say(
            f"{job.stage}: INT4 AWQ (ModelOpt {AWQ_METHOD}, block {AWQ_BLOCK}, {len(samples)} samples)"
            + (", head 8-bit" if head is not None else "")
        )
        kwargs: dict = {"block_size": AWQ_BLOCK}
        if head is not None:
            kwargs["layers_8bit"] = head.name
        cache = awq_cache_bytes(model, samples) if job.stage == "decoder" else None
        if cache is not None and cache <= AWQ_CACHE_BYTES:
            kwargs["enable_fast_path_using_high_sysram"] = True
        q = modelopt_onnx.quantize(
            model,
            job.workdir / "modelopt",
            "int4",
            make_reader(job.stage, samples, job.spec),
            say=lambda s: job.say(f"{job.stage}: {s}"),
            calibration_method=AWQ_METHOD,
            **kwargs,
        )
        data = g.save(q, job.dst)
        details = {
            "weights": f"4-bit blocks of {AWQ_BLOCK}, AWQ scales ({AWQ_METHOD})",
            "head": f"8-bit per channel ({head.name})" if head is not None else None,
            "calibration_samples": len(samples),
            "activation_cache_bytes": cache if kwargs.get("enable_fast_path_using_high_sysram") else None,
            **(
                {"calibration_positions": int(samples[0]["inputs_embeds"].shape[1])}
                if job.stage == "decoder"
                else {}
            ),
            "ops": g.op_counts(q),
        }
        return StageResult(
            f"weight-only AWQ ({AWQ_METHOD})", self.tool, modelopt_onnx.version() or "?", data, "all", details
        )
