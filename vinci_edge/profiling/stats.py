"""Percentiles and the summary of a list of measurements (numpy-free, exact on small samples)."""

from __future__ import annotations

import math
from collections.abc import Sequence

QUANTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between closest ranks.

    The same definition as numpy's default (`method="linear"`) and a spreadsheet's PERCENTILE.INC:
    rank = q/100 * (n - 1). With a handful of runs, p99 lies between the two largest values rather
    than being either of them - stated here because it is what a reader of the table should expect.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not in [0, 100]")
    xs = sorted(values)
    rank = q / 100 * (len(xs) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """n, mean, min, max and p50 / p90 / p99 of `values`; no values give only n = 0."""
    if not values:
        return {"n": 0}
    out: dict[str, float | int] = {
        "n": len(values),
        "mean": sum(values) / len(values),
        "min": min(values),
        "max": max(values),
    }
    for q in QUANTILES:
        out[f"p{q}"] = percentile(values, q)
    return out


def median_per_index(series: Sequence[Sequence[float]]) -> list[float]:
    """Element-wise median over several series of possibly different lengths (e.g. the latency of
    decode step i over the runs; a run that stopped early just contributes to fewer indices)."""
    longest = max((len(s) for s in series), default=0)
    return [percentile([s[i] for s in series if i < len(s)], 50) for i in range(longest)]
