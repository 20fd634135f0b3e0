"""The one place that calls NVIDIA ModelOpt's ONNX quantizer (`modelopt.onnx.quantization.quantize`).

ModelOpt is optional (`pip install 'vinci-edge[quant]'`): the CPU precisions never import it, and a
precision that needs it fails with `MissingDependencyError` before any work is done.

What it takes to run ModelOpt 0.47 on this project's graphs, on a CPU (each found by running it):
- `calibration_eps=['cpu']`, and a calibration method other than 'entropy' (its histograms fail on
  the -inf of attention masks): 'max';
- `high_precision_dtype='fp32'`: the default converts the graph to fp16, which the CPU cannot check
  and which would mix two error sources in the accuracy numbers (TensorRT picks fp16 by itself);
- the ONNX checker it runs rejects ONNX Runtime's default-domain `SimplifiedLayerNormalization`
  (the decoder's first norm), so that node is rewritten in standard operators first;
- it clears `value_info` and ONNX shape inference cannot type the outputs of ONNX Runtime's contrib
  operators (GroupQueryAttention, SkipSimplifiedLayerNormalization), so ORT's static quantizer
  would skip every activation behind them and silently produce a weight-only graph: the types are
  recorded on the graph and kept through ModelOpt's clearing (`_keep_value_info`);
- awq_lite folds its scales into the node before each MatMul (a Mul, a norm's gamma, ...) through
  a cupy-only call (`.get()`) and crashes on numpy: `awqlite_fuse_nodes=False` keeps them as
  separate `Mul` nodes by the scale instead (TensorRT fuses a pointwise Mul into its neighbour).
  Hiding only the Mul weights behind an Identity was not enough: SkipSimplifiedLayerNormalization
  gammas are folded the same way.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx

from vinci_edge.errors import MissingDependencyError
from vinci_edge.progress import Progress
from vinci_edge.quantization import graph as g

INSTALL_HINT = (
    "pip install 'vinci-edge[quant]' (nvidia-modelopt==0.47.0 plus its ONNX helpers, without the "
    "onnxruntime-gpu that modelopt[onnx] would pull over onnxruntime); or pick a CPU precision: "
    "int8-dynamic, int4"
)


def require(precision: str):
    """Import ModelOpt's ONNX quantizer, or say how to get it."""
    try:
        import modelopt
        from modelopt.onnx.quantization import quantize
    except ImportError as exc:
        raise MissingDependencyError(
            f"precision {precision} uses NVIDIA ModelOpt, which is not installed ({exc})", hint=INSTALL_HINT
        ) from exc
    return quantize, modelopt.__version__


def version() -> str | None:
    try:
        import modelopt

        return modelopt.__version__
    except ImportError:
        return None


@contextlib.contextmanager
def _keep_value_info() -> Iterator[None]:
    """Keep the value_info ModelOpt's preprocessing clears (see the module docstring)."""
    mod = sys.modules["modelopt.onnx.quantization.quantize"]
    original = mod.clear_stale_value_info

    def clear_but_keep(model: onnx.ModelProto) -> int:
        kept = list(model.graph.value_info)
        n = original(model)
        have = {v.name for v in model.graph.value_info}
        model.graph.value_info.extend(v for v in kept if v.name not in have)
        return n

    mod.clear_stale_value_info = clear_but_keep
    try:
        yield
    finally:
        mod.clear_stale_value_info = original


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    g.name_nodes(model)
    g.standard_rms_norm(model)
    g.type_untyped_outputs(model)
    return model


def quantize(
    model: onnx.ModelProto,
    workdir: Path,
    mode: str,
    reader: Any,
    nodes_to_quantize: list[str] | None = None,
    nodes_to_exclude: list[str] | None = None,
    calibration_method: str = "max",
    say: Progress | None = None,
    **kwargs: Any,
) -> onnx.ModelProto:
    """Run ModelOpt on a prepared copy of `model` (fp32); returns the quantized model, weights loaded.
    `say` gets ModelOpt's own progress bars as progress lines (graph.quiet_tools)."""
    run, _ = require(mode)
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "input.onnx"
    out = workdir / "output.onnx"
    prepare(model)
    onnx.save_model(
        model, str(src), save_as_external_data=True, all_tensors_to_one_file=True, location="input.onnx.data"
    )
    del model
    args: dict[str, Any] = {
        "quantize_mode": mode,
        "calibration_method": calibration_method,
        "calibration_data_reader": reader,
        "calibration_eps": ["cpu"],
        "use_external_data_format": True,
        "output_path": str(out),
        "high_precision_dtype": "fp32",
        "log_level": "CRITICAL",  # it reports at ERROR that a CPU has no NVML
        **kwargs,
    }
    if mode in ("int8", "fp8"):
        # Only the linear layers: activation x activation matmuls (the towers' attention) stay in
        # high precision, as TensorRT-LLM's W8A8 does; masks and softmax are never touched.
        args["op_types_to_quantize"] = ["MatMul"]
        args["nodes_to_quantize"] = nodes_to_quantize
        # Weights stored quantized (int8 / e4m3) with only a DequantizeLinear: a 4x smaller file, and
        # no QuantizeLinear of constant weights re-run per call by ONNX Runtime.
        args["dq_only"] = True
    if calibration_method.startswith("awq"):
        args["awqlite_fuse_nodes"] = False  # see the module docstring
    if nodes_to_exclude:
        args["nodes_to_exclude"] = nodes_to_exclude
    with _keep_value_info(), g.quiet_tools(say):
        run(str(src), **args)
    return onnx.load(str(out), load_external_data=True)


# Linear layers of the exported decoder by kind -> the suffix of their node names (export/decoder.py).
DECODER_LAYERS = {"qkv": ".qkv", "o_proj": ".o", "gate_up": ".gu", "down_proj": ".mlp_out"}
AUTO = "auto"  # --keep-fp32 auto: chosen by a sensitivity sweep (sensitivity.py)


class ModelOptHandler:
    """What the ModelOpt precisions share: calibrated, and refused up front without ModelOpt."""

    precision: str
    tool = "nvidia-modelopt"

    def needs_calibration(self, job) -> bool:
        return True

    def check_available(self) -> None:
        require(self.precision)


class StaticQdqHandler(ModelOptHandler):
    """INT8 / FP8 static Q/DQ: the LM head stays fp32 unless `quantize_head` (see int8.py)."""

    def __init__(self, quantize_head: bool = False) -> None:
        self.quantize_head = quantize_head


def static_qdq(job, model: onnx.ModelProto, mode: str, label: str, quantize_head: bool, optimization: str):
    """INT8 / FP8 static Q/DQ on every linear layer of `model` (the LM head only when
    `quantize_head`; none of the decoder layers in job.keep_fp32), 'max' calibration on the job's
    samples; writes job.dst. With job.keep_fp32 == ('auto',) every layer is quantized and a
    sensitivity sweep (sensitivity.py) picks the kinds restored to fp32; `optimization` is the ONNX
    Runtime level the sweep runs the Q/DQ graph at.

    Returns (quantized model, external data file name, details for the manifest)."""
    from vinci_edge.quantization.calibration import make_reader

    auto = tuple(job.keep_fp32) == (AUTO,)
    head = None if quantize_head else g.output_head(model)
    keep = () if auto else tuple(DECODER_LAYERS[k] for k in job.keep_fp32)
    linear = [
        n.name
        for n in g.weight_matmuls(model)
        if (head is None or n.name != head.name) and not n.name.endswith(keep or ("\0",))
    ]
    samples = job.calibration.for_stage(job.stage)
    job.say(f"{job.stage}: {label} (ModelOpt, max calibration on {len(samples)} samples)")
    q = quantize(
        model,
        job.workdir / "modelopt",
        mode,
        make_reader(job.stage, samples, job.spec),
        say=lambda s: job.say(f"{job.stage}: {s}"),
        nodes_to_quantize=linear,
    )
    kept, sweep = list(job.keep_fp32), None
    if auto:
        from vinci_edge.quantization.sensitivity import choose_keep

        fp32 = g.load(job.workdir / "modelopt" / "input.onnx")  # the graph ModelOpt quantized
        chosen, sweep = choose_keep(job, q, fp32, DECODER_LAYERS, optimization)
        suffixes = tuple(DECODER_LAYERS[k] for k in chosen)
        restored = {n for n in linear if n.endswith(suffixes)}
        if restored:
            q = g.restore_fp32(q, fp32, restored)
            linear = [n for n in linear if n not in restored]
        kept = list(chosen)
        job.say(f"{job.stage}: kept fp32: {', '.join(chosen) or 'nothing'}")
    data = g.save(q, job.dst)
    details = {
        "quantized_matmuls": len(linear),
        "kept_fp32": kept,
        "head": None if head is None else f"fp32, not quantized ({head.name})",
        "ops": g.op_counts(q),
    }
    if sweep is not None:
        details["sensitivity"] = sweep
    return q, data, details
