"""ONNX Runtime sessions behind the stage interface (`vinci_edge.stages.StageRunner`).

`OrtStage` runs one exported graph: `run(inputs) -> outputs` on numpy arrays, and says which provider
it ended up on. A native TensorRT backend will implement the same interface (the decoder adds its
KV handling on top, see decoder.py). Every session's graph is checked against the manifest first:
its provenance props (`check_provenance`), then its I/O and static output widths.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vinci_edge.errors import EngineError, MissingDependencyError
from vinci_edge.manifest import (
    PROP_EXPORT_ID,
    PROP_FINGERPRINT,
    PROP_MODEL_ID,
    PROP_STAGE,
    REEXPORT,
    STAGE_PROPS,
    StageEntry,
)

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}


def import_onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError(
            "ONNX Runtime is not installed",
            hint="install exactly one runtime extra: pip install 'vinci-edge[cpu]' (onnxruntime) or "
            "'vinci-edge[gpu]' (onnxruntime-gpu + cuda-python) - never both",
        ) from exc
    return ort


def resolve_provider(name: str) -> str:
    """'cpu' / 'cuda' / 'tensorrt' (or a full ONNX Runtime provider name) -> an available provider."""
    ort = import_onnxruntime()
    full = PROVIDER_ALIASES.get(name.lower(), name)
    available = ort.get_available_providers()
    if full not in available:
        extra = (
            "vinci-edge[gpu] (onnxruntime-gpu) on a machine with a CUDA driver"
            if full != ("CPUExecutionProvider")
            else "vinci-edge[cpu]"
        )
        raise EngineError(
            f"execution provider {full} is not available here (available: {', '.join(available)})",
            hint=f"install {extra}, or choose --provider cpu",
        )
    return full


@dataclass
class SessionSettings:
    provider: str = "CPUExecutionProvider"
    threads: int = 0  # 0: one per core
    optimization: str = "all"  # "all" | "basic" (FP8 Q/DQ graphs need basic, see quantization)
    extra: dict[str, Any] = field(default_factory=dict)


def make_session(path: Path, settings: SessionSettings):
    ort = import_onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = settings.threads or (os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        if settings.optimization == "basic"
        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    so.log_severity_level = 3
    providers = [settings.provider]
    if settings.provider != "CPUExecutionProvider":
        providers.append("CPUExecutionProvider")  # nodes the GPU provider lacks fall back to the CPU
    try:
        return ort.InferenceSession(str(path), so, providers=providers)
    except Exception as exc:  # ORT raises its own exception types
        message = str(exc).splitlines()[0][:300]
        hint = "the file may be damaged, or exported by a newer vinci-edge; re-export the engine"
        if "MatMulNBits" in message and "initializer shape" in message:
            # int8-compute engines written before 2026-12-08 stored B as (N, K); ONNX Runtime
            # 1.24 took it, later releases check the (N, K / block, block bytes) of the specification
            hint = (
                f"this engine was quantized by an older vinci-edge for ONNX Runtime <= 1.24 (this is "
                f"{ort.__version__}): quantize it again from its fp32 engine"
            )
        raise EngineError(f"ONNX Runtime cannot load {path.name}: {message}", hint=hint) from exc


class OrtStage:
    """One exported stage graph in an ONNX Runtime session."""

    def __init__(
        self,
        name: str,
        path: Path,
        settings: SessionSettings,
        entry: StageEntry | None = None,
        max_batch: int | None = None,
        provenance: Mapping[str, str] | None = None,
    ):
        """`entry`: the stage's manifest entry; the graph's I/O is checked against it. `provenance`:
        the props the graph must carry (`Manifest.stage_props`); None: not checked."""
        self.name = name
        self.max_batch = max_batch
        self.session = make_session(path, settings)
        if provenance is not None:
            check_provenance(name, path, graph_props(self.session), provenance)
        self.provider = self.session.get_providers()[0]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_dtypes = {i.name: _np_dtype(i.type) for i in self.session.get_inputs()}
        if entry is not None:
            _check_io(name, entry, self.input_names, self.output_names)
            _check_widths(name, entry, {o.name: o.shape for o in self.session.get_outputs()})

    def run(
        self, inputs: Mapping[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        feeds = {k: np.ascontiguousarray(v, dtype=self.input_dtypes[k]) for k, v in inputs.items()}
        names = outputs or self.output_names
        return dict(zip(names, self.session.run(names, feeds)))


def _np_dtype(ort_type: str) -> np.dtype:
    return {
        "tensor(float)": np.dtype(np.float32),
        "tensor(float16)": np.dtype(np.float16),
        "tensor(int32)": np.dtype(np.int32),
        "tensor(int64)": np.dtype(np.int64),
    }.get(ort_type, np.dtype(np.float32))


def graph_props(session) -> dict[str, str]:
    """The metadata_props of a session's graph, as ONNX Runtime reads them (the runtime has no onnx)."""
    return dict(session.get_modelmeta().custom_metadata_map)


# What a stage file from elsewhere comes from, by the first prop that differs (the broadest first).
_ANOTHER = {
    PROP_MODEL_ID: "another model",
    PROP_FINGERPRINT: "another checkpoint of this model",
    # the same fingerprint (configs and file sizes): another export of this checkpoint, or of one
    # with other weights of the same sizes, e.g. another seed of the same preset
    PROP_EXPORT_ID: "another export",
}


def check_provenance(name: str, path: Path, found: Mapping[str, str], expected: Mapping[str, str]) -> None:
    """The graph of stage `name` must carry the provenance the manifest expects (`found`: the graph's
    metadata_props, `expected`: `Manifest.stage_props(name)`): a stage file copied in from another
    engine folder is refused here even when its shapes fit, e.g. one exported from another seed of
    the same preset. Keys only one side has are not compared."""
    ours = {k: found[k] for k in STAGE_PROPS if k in found}
    if not ours:
        _check_unrecorded(name, path, expected)
        return
    if ours.get(PROP_STAGE, name) != name:
        raise EngineError(
            f"stage '{name}': {path.name} holds the '{ours[PROP_STAGE]}' stage: the file was renamed or "
            "copied in from another stage",
            hint=f"put back the engine folder's own {path.name}, or {REEXPORT}",
        )
    wrong = [k for k in _ANOTHER if k in ours and k in expected and ours[k] != expected[k]]
    if wrong:
        raise EngineError(
            f"stage '{name}': {path.name} comes from {_ANOTHER[wrong[0]]} than this engine: the graph was "
            f"written by {_describe(ours)}, this engine by {_describe(expected)}",
            hint=f"the engine folder mixes files of two exports: put back its own {path.name} (and its "
            f".data file, if any), or {REEXPORT}",
        )


def _check_unrecorded(name: str, path: Path, expected: Mapping[str, str]) -> None:
    """A graph without provenance props. Engines exported before the graphs carried them (schema 1
    engines in the field, whose manifest has no export id) load as before: nothing in them says
    where their graphs come from. An engine whose export wrote the props into every graph (its
    manifest has an export id) refuses one without them: it comes from an older export, of any model,
    or was rewritten by a tool that drops the props."""
    if PROP_EXPORT_ID not in expected:
        return
    raise EngineError(
        f"stage '{name}': {path.name} carries no record of its export, though this engine's export wrote "
        f"one into every graph (export {expected[PROP_EXPORT_ID]}): the file comes from another engine "
        "folder, exported before vinci-edge recorded it, or was rewritten by a tool that drops ONNX "
        "metadata",
        hint=f"put back the engine folder's own {path.name}, or {REEXPORT}",
    )


def _describe(props: Mapping[str, str]) -> str:
    return (
        f"export {props.get(PROP_EXPORT_ID, '?')} of checkpoint {props.get(PROP_FINGERPRINT, '?')} "
        f"(model id {props.get(PROP_MODEL_ID, '?')})"
    )


def _check_widths(name: str, entry: StageEntry, shapes: dict[str, list]) -> None:
    """Static output dims must be what the manifest says: a stage file copied in from another
    model's engine is caught here, not as a shape error deep inside the stitch."""
    for out in entry.outputs:
        got = shapes.get(out.name)
        want = out.shape
        if got is None or want is None or len(got) != len(want):
            continue
        for g, w in zip(got, want):
            if isinstance(g, int) and isinstance(w, int) and g != w:
                raise EngineError(
                    f"stage '{name}' output {out.name} has shape {got}, the manifest says {want}: "
                    "the file comes from another model's engine",
                    hint="re-export the engine",
                )


def _check_io(name: str, entry: StageEntry, inputs: list[str], outputs: list[str]) -> None:
    want_in = [i.name for i in entry.inputs]
    want_out = [o.name for o in entry.outputs]
    if sorted(want_in) != sorted(inputs) or not set(want_out) <= set(outputs):
        raise EngineError(
            f"stage '{name}': the graph's inputs {inputs} / outputs {outputs} are not what the manifest "
            f"says ({want_in} / {want_out})",
            hint="the stage file was replaced by another export; re-export the engine",
        )
