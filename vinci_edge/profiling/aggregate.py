"""From per-run stage records to the numbers of a profile: percentiles per stage, time to first
token, end to end, tokens/s, the time no stage accounts for, and ratios between engines.

Pure functions of the records that `profiler.py` collects (profile.json keeps those records, so every
number here can be recomputed from the file).
"""

from __future__ import annotations

from typing import Any

from vinci_edge import metrics as m
from vinci_edge.profiling.stats import median_per_index, summarize

# Time between and around stage records (sampling a token, detokenizing, bookkeeping) that no stage
# accounts for must stay below this share of end to end plus this many seconds; the profile says per
# run whether it did.
OVERHEAD_FRACTION = 0.05
OVERHEAD_SECONDS = 0.05

NS = 1e9


def stage_order(names: set[str]) -> list[str]:
    """Request order for the known stages, then any others alphabetically."""
    known = [s for s in m.STAGES if s in names]
    return known + sorted(names - set(known))


def _duration(r: dict[str, Any]) -> float:
    return (r["end_ns"] - r["start_ns"]) / NS


def run_totals(run: dict[str, Any]) -> dict[str, float]:
    """Seconds per stage in one run (decode steps summed)."""
    out: dict[str, float] = {}
    for r in run["records"]:
        out[r["name"]] = out.get(r["name"], 0.0) + _duration(r)
    return out


def run_numbers(run: dict[str, Any]) -> dict[str, Any]:
    """One run's headline numbers (seconds, tokens/s)."""
    e2e = (run["end_ns"] - run["start_ns"]) / NS
    totals = run_totals(run)
    steps = [_duration(r) for r in run["records"] if r["name"] == m.DECODE]
    prefill = totals.get(m.PREFILL)
    unaccounted = e2e - sum(totals.values())
    return {
        "end_to_end_s": e2e,
        "time_to_first_token_s": None
        if run.get("first_token_ns") is None
        else (run["first_token_ns"] - run["start_ns"]) / NS,
        "decode_steps_s": steps,
        "decode_tokens_per_second": len(steps) / sum(steps) if steps and sum(steps) > 0 else None,
        "prefill_tokens_per_second": run["prompt_positions"] / prefill if prefill else None,
        "unaccounted_s": unaccounted,
        "within_overhead_budget": unaccounted <= OVERHEAD_FRACTION * e2e + OVERHEAD_SECONDS,
        "stages_s": totals,
    }


def _present(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Percentiles over the runs after warm-up (warm-up runs are kept in the file, not counted)."""
    measured = [r for r in runs if not r["warmup"]]
    nums = [run_numbers(r) for r in measured]
    names = stage_order({k for n in nums for k in n["stages_s"]})
    return {
        "runs": len(measured),
        "prompt_positions": measured[-1]["prompt_positions"] if measured else None,
        "new_tokens": summarize([r["new_tokens"] for r in measured]),
        "stages_s": {s: summarize([n["stages_s"].get(s, 0.0) for n in nums]) for s in names},
        "time_to_first_token_s": summarize(_present([n["time_to_first_token_s"] for n in nums])),
        "end_to_end_s": summarize([n["end_to_end_s"] for n in nums]),
        "decode_tokens_per_second": summarize(_present([n["decode_tokens_per_second"] for n in nums])),
        "prefill_tokens_per_second": summarize(_present([n["prefill_tokens_per_second"] for n in nums])),
        "decode_step_s": summarize([s for n in nums for s in n["decode_steps_s"]]),
        "decode_step_median_s": median_per_index([n["decode_steps_s"] for n in nums]),
        "unaccounted_s": summarize([n["unaccounted_s"] for n in nums]),
        "overhead_budget": {
            "fraction": OVERHEAD_FRACTION,
            "seconds": OVERHEAD_SECONDS,
            "all_runs_within": all(n["within_overhead_budget"] for n in nums),
        },
    }


# ---- comparison -------------------------------------------------------------------------------------
def _p50(summary: dict[str, Any] | None) -> float | None:
    return None if not summary else summary.get("p50")


def comparison_rows(engines: list[dict[str, Any]]) -> list[tuple[str, str, str, str, list[float | None]]]:
    """(key, label, unit, better, values per engine) for every number worth comparing."""
    req = [e["requests"] for e in engines]
    rows = [
        ("time_to_first_token_s", "time to first token p50", "s", "lower",
         [_p50(r["time_to_first_token_s"]) for r in req]),
        ("end_to_end_s", "end to end p50", "s", "lower", [_p50(r["end_to_end_s"]) for r in req]),
        ("decode_tokens_per_second", "decode p50", "tok/s", "higher",
         [_p50(r["decode_tokens_per_second"]) for r in req]),
        ("prefill_tokens_per_second", "prefill p50", "tok/s", "higher",
         [_p50(r["prefill_tokens_per_second"]) for r in req]),
    ]  # fmt: skip
    for s in stage_order({s for r in req for s in r["stages_s"]}):
        rows.append((f"stage.{s}", f"{s} p50", "s", "lower", [_p50(r["stages_s"].get(s)) for r in req]))
    rows += [
        ("load_s", "load, all sessions", "s", "lower", [e["load"]["total_s"] for e in engines]),
        ("peak_rss_bytes", "peak RSS", "bytes", "lower", [e["memory"]["peak_rss_bytes"] for e in engines]),
        ("disk_bytes", "engine size on disk", "bytes", "lower", [e["sizes"]["total_bytes"] for e in engines]),
        ("percent_of_bound", "decode, share of the bandwidth bound", "%", "higher",
         [(e.get("bound") or {}).get("percent_of_bound") for e in engines]),
    ]  # fmt: skip
    return rows


def compare(engines: list[dict[str, Any]]) -> dict[str, Any]:
    """Every engine's numbers as ratios to the first engine's (value / first value)."""
    rows = []
    for key, label, unit, better, values in comparison_rows(engines):
        base = values[0]
        ratios = [None if v is None or not base else v / base for v in values]
        rows.append(
            {
                "metric": key,
                "label": label,
                "unit": unit,
                "better": better,
                "values": values,
                "ratios": ratios,
            }
        )
    return {"baseline": engines[0]["label"], "labels": [e["label"] for e in engines], "rows": rows}
