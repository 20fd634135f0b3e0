"""What `vinci-edge build-engines` would build, decided without TensorRT.

For each stage of an engine folder: the graph to build (the portable decoder graph for the decoder),
how it is typed (strongly typed for Q/DQ graphs, the `--precision` mode otherwise), its optimization
profiles (runtime/profiles.py), the settings hash and - when the device is known - the key the plan
is stored under, and whether a plan with that key is already there (reused) or must be built. Stages
that TensorRT cannot build are refused (a CPU-only quantization, FP8 on a GPU without FP8) or skipped
with the reason (no portable decoder graph yet).

Everything here is pure Python over the manifest, so the plan is tested on the CPU and printed by
`build-engines --dry-run` on a machine without TensorRT.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vinci_edge import stages as st
from vinci_edge.errors import EngineError
from vinci_edge.manifest import Manifest, StageEntry
from vinci_edge.runtime import profiles
from vinci_edge.runtime.backends import FP8_MIN_CC
from vinci_edge.runtime.engine_key import DeviceInfo, EngineKey, onnx_hash, plan_records

# --precision: how graphs without their own quantization are built.
PRECISIONS = ("auto", "fp16", "fp32")
# Quantized precisions TensorRT builds from their Q/DQ nodes (strongly typed networks).
QDQ = ("int8", "fp8", "int4-awq")
# Quantizations made for ONNX Runtime's CPU kernels (MatMulNBits, MatMulInteger): not TensorRT graphs.
CPU_ONLY = ("int4", "int8-dynamic")

STRONGLY_TYPED = "strongly-typed"


@dataclass(frozen=True)
class Typing:
    """How a network is typed: `strongly_typed` (types from the graph: Q/DQ and fp16 graphs, and
    fp32 graphs built as fp32) or weakly typed with the FP16 builder flag."""

    mode: str  # "strongly-typed" | "fp16"
    tf32: bool = True

    @property
    def strongly_typed(self) -> bool:
        return self.mode == STRONGLY_TYPED

    def describe(self) -> str:
        if self.strongly_typed:
            return "strongly typed" + ("" if self.tf32 else ", no TF32")
        return "FP16 kernels allowed (weakly typed)"


def typing_for(graph_precision: str, precision: str) -> Typing:
    """The network typing of a stage whose graph is `graph_precision` (Manifest.precision_of) when
    --precision is `precision`."""
    if graph_precision in QDQ or graph_precision == "fp16":
        return Typing(STRONGLY_TYPED)  # the graph's own types; --precision does not apply
    if precision == "fp16":
        return Typing("fp16")
    return Typing(STRONGLY_TYPED, tf32=precision != "fp32")


@dataclass
class StagePlan:
    stage: str
    action: str  # "build" | "reuse" | "skip"
    reason: str = ""
    graph: list[Path] = field(default_factory=list)  # the .onnx and its external data
    graph_precision: str = ""
    typing: Typing | None = None
    profiles: list[profiles.Profile] = field(default_factory=list)
    settings: str = ""
    key: EngineKey | None = None
    plan_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "action": self.action,
            "reason": self.reason,
            "graph": [str(p) for p in self.graph],
            "graph_precision": self.graph_precision,
            "typing": self.typing.describe() if self.typing else None,
            "profiles": [p.to_dict() for p in self.profiles],
            "settings": self.settings,
            "key": self.key.to_dict() if self.key else None,
            "plan": str(self.plan_path) if self.plan_path else None,
        }

    def line(self) -> str:
        """One line for the dry run and the progress output."""
        if self.action == "skip":
            return f"{self.stage}: skipped - {self.reason}"
        axes = "; ".join(
            f"{p.name}: " + ", ".join(f"{a}={r}" for a, r in p.axes.items()) for p in self.profiles
        )
        what = "reuse" if self.action == "reuse" else "build"
        typing = self.typing.describe() if self.typing else "?"
        return f"{self.stage}: {what} {self.graph[0].name} ({self.graph_precision}, {typing}; {axes})"


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "auto"
    overrides: dict[str, profiles.AxisRange] = field(default_factory=dict)
    workspace_mib: int | None = None
    opt_level: int = 3
    force: bool = False


def settings_hash(typing: Typing, profs: list[profiles.Profile], options: BuildOptions) -> str:
    record = {
        "typing": [typing.mode, typing.tf32],
        "profiles": [p.to_dict() for p in profs],
        "workspace_mib": options.workspace_mib,
        "opt_level": options.opt_level,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def stage_graph(manifest: Manifest, stage: str) -> StageEntry | None:
    """The graph TensorRT builds for `stage` (None: the decoder without a portable graph)."""
    if stage == st.DECODER:
        return profiles.portable_decoder(manifest)
    return manifest.stages[stage]


def make_plan(
    folder: Path,
    manifest: Manifest,
    stages: list[str] | None,
    options: BuildOptions,
    out: Path,
    device: DeviceInfo | None,
) -> list[StagePlan]:
    """The plan of every requested stage (all the engine has when `stages` is None). Refuses, with one
    EngineError, a stage named that the engine lacks, an override of an axis no stage has, and a
    stage TensorRT cannot run on `device`."""
    names = list(manifest.stages) if stages is None else stages
    missing = [s for s in names if s not in manifest.stages]
    if missing:
        raise EngineError(
            f"this engine has no {', '.join(missing)} stage (it has {', '.join(manifest.stages)})",
            hint="choose --stages among those",
        )
    buildable = [s for s in names if stage_graph(manifest, s) is not None]
    profiles.check_override_names(manifest, buildable, options.overrides)
    return [
        _plan_stage(folder, manifest, s, options, out, device, explicit=stages is not None) for s in names
    ]


def _plan_stage(
    folder: Path,
    manifest: Manifest,
    stage: str,
    options: BuildOptions,
    out: Path,
    device: DeviceInfo | None,
    explicit: bool,
) -> StagePlan:
    entry = stage_graph(manifest, stage)
    if entry is None:
        if explicit:
            raise EngineError(profiles.NO_PORTABLE_DECODER, hint="or build only the media stages (--stages)")
        return StagePlan(stage, "skip", profiles.NO_PORTABLE_DECODER)
    precision = entry.precision or ("fp16" if entry.dtype == "float16" else "fp32")
    if precision in CPU_ONLY:
        raise EngineError(
            f"stage '{stage}' is quantized as {precision}, a format for ONNX Runtime's CPU kernels that "
            "TensorRT cannot build",
            hint="quantize for TensorRT instead: `vinci-edge quantize ... --precision int8|fp8|int4-awq`",
        )
    if precision == "fp8" and device is not None and device.compute_capability < FP8_MIN_CC:
        raise EngineError(
            f"stage '{stage}' is FP8, which needs a GPU of compute capability 8.9 or newer (Ada, Hopper, "
            f"Blackwell, Thor); this is {device.describe()}",
            hint="quantize for this GPU with --precision int8 or int4-awq (Orin: int8 / int4-awq)",
        )
    typing = typing_for(precision, options.precision)
    profs = profiles.stage_profiles(manifest, stage, entry, options.overrides)
    graph = [folder / entry.file] + ([folder / entry.external_data] if entry.external_data else [])
    settings = settings_hash(typing, profs, options)
    plan = StagePlan(stage, "build", "", graph, precision, typing, profs, settings)
    if device is None:
        plan.reason = "the key is known once the device is (TensorRT and a GPU)"
        return plan
    plan.key = EngineKey.make(stage, device, onnx_hash(graph, out if out.is_dir() else None), settings)
    plan.plan_path = out / device.slug / plan.key.file_name()
    existing = {p for p, r in plan_records(out, stage)}
    if plan.plan_path in existing and not options.force:
        plan.action, plan.reason = "reuse", "a plan with this key is already built (--force rebuilds it)"
    return plan
