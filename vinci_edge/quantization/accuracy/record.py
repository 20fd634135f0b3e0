"""One variant's entry in the accuracy report (keys in docs/quantization.md, 'accuracy.json').

Per stage: precision, method, size and, where compared, the output statistics (stats.py). For the
LLM: perplexity and its change against fp32 with the 95 % interval, top1_agreement (the fraction
of window positions where the variant's argmax equals fp32's) and the greedy answers' agreement.
The goal follows the decoder's precision (PERPLEXITY_GOALS); `met` judges the point estimate,
`met_beyond_noise` the whole interval. A variant that could not be built or measured gets an entry
too (`failed_entry`), so a report never silently leaves one out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vinci_edge import stages as st
from vinci_edge.manifest import Manifest
from vinci_edge.quantization.accuracy.engines import engine_sizes, precisions_of
from vinci_edge.quantization.accuracy.inputs import Inputs
from vinci_edge.quantization.accuracy.run import Outputs
from vinci_edge.quantization.accuracy.stats import agreement, change_interval, compare, perplexity, token_nll

# Perplexity goals of the issue, by the decoder's precision: INT8 / FP8 within 2 %, INT4 within 8 %.
PERPLEXITY_GOALS = {
    "int8": 2.0,
    "int8-dynamic": 2.0,
    "fp8": 2.0,
    "int4": 8.0,
    "int4-awq": 8.0,
    "int4-dq": 8.0,
}


def variant_entry(
    label: str,
    folder: Path,
    manifest: Manifest,
    ref: Outputs,
    got: Outputs,
    inputs: Inputs,
    ref_ppl: float | None,
    ref_sizes: dict[str, Any],
    ref_sha: str,
) -> dict[str, Any]:
    """The entry of a measured variant: `got` (its outputs) against `ref` (fp32's) on `inputs`."""
    prec = precisions_of(manifest)
    sizes = engine_sizes(folder, manifest)
    stages = _stage_entries(manifest, prec, sizes, ref_sizes, ref, got, inputs)
    llm = _llm_entry(ref, got, inputs, ref_ppl) if ref.logits is not None else None
    goal = _goal(llm, prec.get(st.DECODER, {}).get("precision", "fp32"))
    source = (manifest.quantization or {}).get("source_manifest_sha256")
    return {
        "name": label,
        "engine": str(Path(folder).resolve()),
        "precision": {s: p["precision"] for s, p in prec.items()},
        "quantization": manifest.quantization,
        "from_this_fp32": source == ref_sha if source else None,
        "stages": stages,
        "llm": llm,
        "size": {**sizes, "ratio_vs_fp32": sizes["stage_bytes"] / ref_sizes["stage_bytes"]},
        "goal": goal,
        "error": None,
    }


def failed_entry(label: str, folder: str | Path, precision: str, error: str) -> dict[str, Any]:
    """A variant that could not be built or measured: listed, with the error, never left out."""
    return {
        "name": label,
        "engine": str(folder),
        "precision": {"requested": precision},
        "quantization": None,
        "from_this_fp32": None,
        "stages": {},
        "llm": None,
        "size": None,
        "goal": None,
        "error": error,
    }


def _stage_entries(
    manifest: Manifest,
    prec: dict[str, dict[str, str]],
    sizes: dict[str, Any],
    ref_sizes: dict[str, Any],
    ref: Outputs,
    got: Outputs,
    inputs: Inputs,
) -> dict[str, Any]:
    """stage -> precision, method, size and, for the stages compared, the output statistics."""
    stages: dict[str, Any] = {}
    for stage in manifest.stages:
        entry: dict[str, Any] = {
            **prec[stage],
            "bytes": sizes["stages"][stage],
            "size_ratio": sizes["stages"][stage] / ref_sizes["stages"][stage],
        }
        if stage in ref.towers:
            entry.update(compare(ref.towers[stage], got.towers[stage]))
            entry["inputs"] = inputs.described[stage]
        elif stage == st.DECODER and ref.logits is not None:
            entry.update(compare(ref.logits, got.logits))
            entry["inputs"] = inputs.described[st.DECODER]
            entry["compared"] = "logits"
        stages[stage] = entry
    return stages


def _llm_entry(ref: Outputs, got: Outputs, inputs: Inputs, ref_ppl: float) -> dict[str, Any]:
    """Perplexity, its change and interval, top-1 agreement and the answers' agreement."""
    targets = inputs.targets
    ppl = perplexity(got.logits, targets)
    per = [agreement(a, b) for a, b in zip(ref.answers, got.answers)]
    return {
        "perplexity": ppl,
        "perplexity_change_pct": 100.0 * (ppl / ref_ppl - 1.0),
        "perplexity_change_ci95_pct": change_interval(
            token_nll(ref.logits, targets), token_nll(got.logits, targets)
        ),
        "top1_agreement": float(np.mean(ref.logits.argmax(1) == got.logits.argmax(1))),
        "answers": {
            "count": len(per),
            "tokens": len(ref.answers[0]) if ref.answers else 0,
            "identical": sum(a == b for a, b in zip(ref.answers, got.answers)),
            "prefix_agreement": float(np.mean([p["prefix_agreement"] for p in per])) if per else None,
            "token_agreement": float(np.mean([p["token_agreement"] for p in per])) if per else None,
            "per_prompt": per,
        },
    }


def _goal(llm: dict[str, Any] | None, decoder_precision: str) -> dict[str, Any] | None:
    """The perplexity goal of the decoder's precision and whether it is met; None for an fp32
    decoder or when the LLM was not measured."""
    limit = PERPLEXITY_GOALS.get(decoder_precision)
    if llm is None or limit is None:
        return None
    return {
        "metric": "perplexity_change_pct",
        "limit_pct": limit,
        "met": bool(abs(llm["perplexity_change_pct"]) <= limit),
        # whether the whole interval is within the limit: "met" beyond the measurement's noise
        "met_beyond_noise": bool(max(abs(x) for x in llm["perplexity_change_ci95_pct"]) <= limit),
    }
