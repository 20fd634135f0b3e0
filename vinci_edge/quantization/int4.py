"""INT4 weight-only, block-wise: MatMulNBits for ONNX Runtime, ModelOpt AWQ for TensorRT.

`int4` (ONNX Runtime, CPU and CUDA providers): every linear layer becomes a `MatMulNBits` with 4-bit
weights in blocks of 32 input channels, each block with its own scale and a *float* minimum (GGUF's
Q4_1; float_min.py explains how a float minimum runs on a kernel that takes integer zero points).
`accuracy_level=4` lets the CPU kernel quantize the activations to int8 per block and use integer
dot products: far faster than the fp32-compute path (25x for the 8-bit head) at no measurable
accuracy cost (see docs/quantization.md, 'INT4: the LM head, the accuracy level and AWQ').

The output head stays at 8 bits by default (MatMulNBits bits=8, symmetric, same blocks), as GGUF's
Q4 files keep it; the head is found as the MatMul producing `logits`. `--head-bits 4` stores it as
4-bit float-minimum blocks like the other layers: a faster decode step for some perplexity and
top-1 agreement (same section of docs/quantization.md).
No calibration: round-to-nearest (block min/max).

Why a float minimum: SmolLM2's "fp32" weights are themselves quantized - the checkpoint is
dequantized from a GGUF whose linear layers are Q4_1 (every weight lies exactly on 16 levels per
block of 32 input channels, from the block's min to its max) and whose head is Q8_0 (symmetric
8-bit blocks of 32). `int4` stores exactly those grids, so on SmolLM2 it reproduces the checkpoint
up to the int8 activations and the 4-bit correction coefficients, where integer zero points or
symmetric blocks re-round every weight onto another grid (see docs/quantization.md, 'INT4 with a
float minimum'). On SmolLM2 its accuracy therefore measures no rounding loss at all.

`int4-awq` (TensorRT): ModelOpt's INT4 AWQ - activation-aware per-channel scales searched on the
calibration set (awq_lite), then 4-bit blocks behind a DequantizeLinear (opset 21), the head at 8 bits
per channel (ModelOpt's `layers_8bit`). ONNX Runtime runs the DequantizeLinear + MatMul graph on
the CPU, which is how its accuracy is measured here. TensorRT takes no zero points, so its
symmetric blocks of 128 re-round a Q4_1 checkpoint much more coarsely than `int4`.

ONNX Runtime's MatMulNBits also accepts float zero points, which would store Q4_1 directly - but
its CPU kernel then dequantizes per call, slower than fp32 (see docs/quantization.md, 'INT4 with a
float minimum'); hence float_min.py's block sums.

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

from vinci_edge import stages as st
from vinci_edge.quantization import float_min, modelopt_onnx
from vinci_edge.quantization import graph as g
from vinci_edge.quantization.handler import StageJob, StageResult

BLOCK = 32
HEAD_BITS = (8, 4)  # --head-bits: 8 (default) or 4
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

    def run(self, job: StageJob) -> StageResult:
        model = g.load(job.src)
        g.name_nodes(model)
        head = g.output_head(model)
        head_bits = job.head_bits if head is not None else None
        job.say(
            f"{job.stage}: INT4 MatMulNBits (blocks of {BLOCK}, float minimum)"
            + (f", head {head_bits}-bit" if head_bits else "")
        )
        if head_bits == 8:
            model = g.matmul_nbits(model, 8, BLOCK, symmetric=True, nodes_to_include=[head.name])
        layers = [n.name for n in g.weight_matmuls(model)]
        model, on_grid = float_min.replace_matmuls(model, layers, BLOCK, g.NBITS_ACCURACY_LEVEL)
        if on_grid > 0.99:
            job.say(f"{job.stage}: {100 * on_grid:.1f}% of the blocks were 4-bit already: kept exactly")
        data = g.save(model, job.dst)
        details = {
            "weights": f"4-bit blocks of {BLOCK}, scale + float minimum per block (as GGUF Q4_1)",
            # 1.0: the checkpoint was already 4-bit (e.g. dequantized from Q4_1) and nothing is lost
            "blocks_already_on_grid": round(on_grid, 4),
            "head": _head_record(head, head_bits),
            "accuracy_level": g.NBITS_ACCURACY_LEVEL,
            "ops": g.op_counts(model),
        }
        return StageResult(
            "weight-only RTN, float minimum (MatMulNBits)", self.tool, _ort_version(), data, "all", details
        )


def _head_record(head, bits: int | None) -> str | None:
    if head is None:
        return None
    if bits == 8:
        return f"8-bit symmetric blocks of {BLOCK} ({head.name})"
    return f"4-bit blocks of {BLOCK} with a float minimum, as the layers ({head.name})"


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
        if job.stage == st.DECODER:
            samples = same_length(samples)
        job.say(
            f"{job.stage}: INT4 AWQ (ModelOpt {AWQ_METHOD}, block {AWQ_BLOCK}, {len(samples)} samples)"
            + (", head 8-bit" if head is not None else "")
        )
        kwargs: dict = {"block_size": AWQ_BLOCK}
        if head is not None:
            kwargs["layers_8bit"] = head.name
        cache = awq_cache_bytes(model, samples) if job.stage == st.DECODER else None
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
                if job.stage == st.DECODER
                else {}
            ),
            "ops": g.op_counts(q),
        }
        return StageResult(
            f"weight-only AWQ ({AWQ_METHOD})", self.tool, modelopt_onnx.version() or "?", data, "all", details
        )
