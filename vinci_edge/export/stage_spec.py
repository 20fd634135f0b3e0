"""The one torch.onnx path every tower stage takes, and the manifest entry it describes.

Exporter choice (torch 2.13, transformers 4.57): `torch.onnx.export(dynamo=True)`. On SigLIP and the
Qwen2-Audio encoder it gives a clean graph straight from the modules (one MatMul per linear, native
LayerNormalization and Gelu at opset 20, no shape arithmetic), matches the reference to ~1e-6, and
takes `Dim`s for the frame / chunk axis. The TorchScript exporter cannot trace the projector's
`round(t ** 0.5)` on a traced size, and the eager attention path exports with fewer nodes than SDPA
(which adds Shape/Slice/Concat for its scale), so the towers keep the reference's "eager" attention.

The manifest entry is read back from the saved graph, so it states exactly what the file holds.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from vinci_edge.errors import ConfigError
from vinci_edge.progress import Progress, silent

# Opset 20 has Gelu (tanh and erf forms) as one node; ONNX Runtime >= 1.17 runs it.
OPSET = 20
# Weights above this many bytes go to `<file>.data` (one per graph): a protobuf cannot exceed 2 GB,
# and serialising big weights inline costs ~3x their size in RAM at save time (measured: +255 MB for
# nano's 88 MB audio graph inline, +3 MB with external data).
EXTERNAL_DATA_BYTES = 100_000_000

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16}
ONNX_DTYPE_NAMES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16"}


def normalize_dtype(dtype: str) -> str:
    """ "float32"/"fp32" -> "float32", "float16"/"fp16" -> "float16"; anything else is refused."""
    if dtype not in DTYPES:
        raise ConfigError(
            f"stage dtype {dtype!r} is not supported",
            hint="export the towers as float32 or float16 (fp16); bfloat16 has no ONNX Runtime CPU kernels",
        )
    return "float16" if DTYPES[dtype] is torch.float16 else "float32"


def exporter_name() -> str:
    return f"torch.onnx (dynamo) {torch.__version__}"


def _softmax_in_dtype(self, dim: int, dtype: int = -1):
    """aten::softmax with `dtype`, computed IN that dtype.

    torchlib translates `softmax(x, dtype=float32)` as Softmax(x) followed by a Cast, i.e. in fp16 for
    an fp16 graph; SigLIP's eager attention asks for the softmax in float32, so cast first.
    """
    from onnxscript import opset20 as op  # the same opset as OPSET

    if dtype is not None and dtype != -1:
        self = op.Cast(self, to=dtype)
    return op.Softmax(self, axis=dim)


def cast_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of `module` with floating-point weights in `dtype`, built without a full-precision
    duplicate: deepcopy's memo hands it the cast tensors, so the peak is the original + the cast copy
    (for the 9B audio tower in fp16: +1.3 GB instead of +3.9 GB)."""
    memo: dict[int, Any] = {}
    for p in module.parameters():
        memo[id(p)] = nn.Parameter(p.detach().to(dtype), requires_grad=False)
    for b in module.buffers():
        if b.is_floating_point():
            memo[id(b)] = b.detach().to(dtype)
    return copy.deepcopy(module, memo)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence two harmless messages of torch 2.13's exporter that read like failures in an export
    log: "torchvision is not installed. Skipping torchvision::nms" (it registers vision ops we do not
    use) and a FutureWarning from torch's own pytree code."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def _param_bytes(module: nn.Module, dtype: torch.dtype) -> int:
    per = torch.finfo(dtype).bits // 8
    return sum(p.numel() for p in module.parameters()) * per


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def describe(value: onnx.ValueInfoProto) -> dict[str, Any]:
    elem = value.type.tensor_type.elem_type
    return {
        "name": value.name,
        "shape": _dims(value),
        "dtype": ONNX_DTYPE_NAMES.get(elem, onnx.TensorProto.DataType.Name(elem).lower()),
    }


def stage_entry(path: Path, dtype: str) -> dict[str, Any]:
    """The manifest entry of a saved stage graph (its I/O read from the file, weights not loaded)."""
    proto = onnx.load(str(path), load_external_data=False)
    data = path.with_name(path.name + ".data")
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return {
        "file": path.name,
        "inputs": [describe(v) for v in proto.graph.input],
        "outputs": [describe(v) for v in proto.graph.output],
        "opset": int(opset),
        "dtype": dtype,
        "exporter": exporter_name(),
        "external_data": data.name if data.is_file() else None,
    }


def export_stage(
    module: nn.Module,
    example: torch.Tensor,
    out_path: Path,
    *,
    stage: str,
    input_name: str,
    output_names: Sequence[str],
    batch_dim: str,
    dtype: str,
    external_data: bool | None = None,
    progress: Progress | None = None,
    props: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Export `module(example)` to `out_path` with axis 0 of the input (and outputs) dynamic;
    `props` go to the graph's metadata_props (the stage's provenance, vinci_edge.manifest.stage_props).

    `module` may hold weights of another dtype than `dtype`: a converted copy of just its weights is
    exported (the caller's model is never cast in place, as fp32 -> fp16 -> fp32 is lossy).
    `external_data` None decides by size (EXTERNAL_DATA_BYTES).
    """
    say = progress or silent
    dtype = normalize_dtype(dtype)
    torch_dtype = DTYPES[dtype]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    module = module.eval()
    if any(p.dtype != torch_dtype for p in module.parameters()):
        say(f"{stage}: casting a copy of the weights to {dtype}")
        module = cast_copy(module, torch_dtype)
    nbytes = _param_bytes(module, torch_dtype)
    external = nbytes > EXTERNAL_DATA_BYTES if external_data is None else external_data

    say(f"{stage}: tracing and converting to ONNX ({nbytes / 1e6:.1f} MB of {dtype} weights, opset {OPSET})")
    with _quiet_exporter(), torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            module,
            (example.to(torch_dtype),),
            None,
            dynamo=True,
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_shapes=({0: torch.export.Dim(batch_dim, min=1)},),
            opset_version=OPSET,
            optimize=True,
            custom_translation_table={torch.ops.aten.softmax.int: _softmax_in_dtype},
            verbose=False,
        )
    data_path = out_path.with_name(out_path.name + ".data")
    data_path.unlink(missing_ok=True)  # never leave a stale data file beside an inline graph
    say(f"{stage}: saving {out_path.name}" + (f" + {data_path.name}" if external else ""))
    program.model.metadata_props.update(props or {})
    program.save(str(out_path), external_data=external)
    # onnxscript's rewriter rules keep their last match in module state, and through it this graph
    # and every weight it references, until the next export; detach the weights from the graph so
    # the cast copy (and the IR's tensors) are freed now, not while the next stage is exported.
    for value in program.model.graph.initializers.values():
        value.const_value = None
    del program

    entry = stage_entry(out_path, dtype)
    say(f"{stage}: done in {time.perf_counter() - started:.1f} s")
    return entry
