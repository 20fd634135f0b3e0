"""What a quantized engine costs in accuracy: every stage of a variant against the fp32 engine.

    fp32 engine ──┬─ tower inputs from real media (Pipeline.prepare: frames, mel chunks, image tiles)
                  │    vision / audio / image_projector outputs       ─┐
                  ├─ fixed windows of real English text                │  computed once
                  │    teacher-forced logits through OrtDecoder        │  (inputs.py, run.py)
                  └─ greedy answers to real prompts (Pipeline.ask)    ─┘
    each variant: the same inputs through its own stages -> the numbers (stats.py), one entry
                  per variant (record.py)

Everything runs through the runtime's own classes (Pipeline, OrtStage, OrtDecoder) with the
optimisation level each stage's manifest asks for: what is measured is what ships.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vinci_edge.errors import ConfigError
from vinci_edge.progress import Progress, silent
from vinci_edge.quantization.accuracy.engines import check_engines, engine_sizes, load_manifest, manifest_sha
from vinci_edge.quantization.accuracy.inputs import prepare_inputs
from vinci_edge.quantization.accuracy.record import variant_entry
from vinci_edge.quantization.accuracy.run import run_engine
from vinci_edge.quantization.accuracy.settings import AccuracySettings
from vinci_edge.quantization.accuracy.stats import perplexity


def measure(
    fp32: str | Path,
    variants: list[str | Path],
    settings: AccuracySettings | None = None,
    progress: Progress | None = None,
    names: list[str] | None = None,
    threads: int = 0,
) -> dict[str, Any]:
    """The accuracy report (a JSON-ready dict, keys in docs/quantization.md) of each variant against
    the fp32 engine. `names` labels the variants (default: folder names)."""
    from vinci_edge import __version__
    from vinci_edge.runtime.pipeline import Pipeline

    say = progress or silent
    fp32 = Path(fp32)
    folders = [Path(v) for v in variants]
    labels = list(names) if names else [f.name for f in folders]
    if len(labels) != len(folders):
        raise ConfigError("one name per variant is needed")
    settings = (settings or AccuracySettings()).resolved()
    ref_manifest = check_engines(fp32, folders)
    ref_sha = manifest_sha(fp32)

    pipe = Pipeline.from_engine(fp32, threads=threads)
    inputs = prepare_inputs(pipe, settings, say)
    if settings.decoder and not inputs.windows:
        settings.decoder = False  # an engine without a decoder: towers only
    ref = run_engine(pipe, inputs, settings, "fp32", say)
    del pipe
    ref_sizes = engine_sizes(fp32, ref_manifest)
    ref_ppl = perplexity(ref.logits, inputs.targets) if ref.logits is not None else None

    report: dict[str, Any] = {
        "schema": "vinci-edge/quant-accuracy/1",
        "vinci_edge": __version__,
        "fp32_engine": str(fp32.resolve()),
        "model_id": ref_manifest.model_id,
        "settings": settings.record(),
        "inputs": inputs.described,
        "fp32": {
            "perplexity": ref_ppl,
            "predicted_tokens": int(len(inputs.targets)) if inputs.windows else 0,
            "size": ref_sizes,
        },
        "variants": [],
    }
    for label, folder in zip(labels, folders):
        say(f"{label}: measuring {folder}")
        manifest = load_manifest(folder)
        pipe = Pipeline.from_engine(folder, threads=threads)
        got = run_engine(pipe, inputs, settings, label, say)
        del pipe
        report["variants"].append(
            variant_entry(label, folder, manifest, ref, got, inputs, ref_ppl, ref_sizes, ref_sha)
        )
        say(f"{label}: done")
    return report
