"""The engine folders a report compares: the check that the variants come from the fp32 reference,
and what their manifests and files say (precisions, sizes on disk, the manifest's hash)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vinci_edge.errors import EngineError
from vinci_edge.manifest import Manifest


def check_engines(fp32: Path, variants: list[Path]) -> Manifest:
    """Refuse, before anything runs, a reference that is not fp32 or a variant of another model."""
    ref = load_manifest(fp32)
    quantized = {s: p for s, p in precisions_of(ref).items() if p["precision"] != "fp32"}
    if ref.quantization is not None or quantized:
        raise EngineError(
            f"--engine {fp32} is a quantized engine; the reference must be the fp32 export",
            hint="pass the folder `vinci-edge export` wrote as --engine, and quantized ones as --variant",
        )
    for v in variants:
        man = load_manifest(v)
        if man.model_id != ref.model_id:
            raise EngineError(
                f"--variant {v} holds another model ({man.model_id}) than --engine ({ref.model_id})",
                hint="pass variants quantized from the --engine folder",
            )
        if set(man.stages) != set(ref.stages):
            raise EngineError(
                f"--variant {v} has stages {sorted(man.stages)}, --engine has {sorted(ref.stages)}",
                hint="quantize the whole fp32 engine (stages not quantized are copied)",
            )
    return ref


def load_manifest(folder: Path) -> Manifest:
    from vinci_edge.runtime.engine import Engine

    return Engine.load(folder).manifest


def precisions_of(manifest: Manifest) -> dict[str, dict[str, str]]:
    """stage -> {precision, method} as the manifest records it (fp32 for an export)."""
    out = {}
    for stage, entry in manifest.stages.items():
        r = manifest.precision.get(stage, {})
        out[stage] = {
            "precision": r.get("precision") or entry.precision or "fp32",
            "method": r.get("method", "none"),
        }
    return out


def engine_sizes(folder: Path, manifest: Manifest) -> dict[str, Any]:
    stages = {s: stage_bytes(folder, e.file) for s, e in manifest.stages.items()}
    total = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    return {"stages": stages, "stage_bytes": sum(stages.values()), "total_bytes": total}


def stage_bytes(folder: Path, file: str) -> int:
    """Bytes on disk of a stage: the graph plus its external data."""
    path = Path(folder) / file
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def manifest_sha(folder: Path) -> str:
    """The hash a quantized engine records of its source manifest (`from_this_fp32` compares them)."""
    import hashlib

    from vinci_edge.manifest import MANIFEST

    return hashlib.sha256((Path(folder) / MANIFEST).read_bytes()).hexdigest()
