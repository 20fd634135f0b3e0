"""Stitch: the plan's gather + CRTE in one place -> `inputs_embeds` (S x D) for the decoder.

    out[p] = text_table[src[p]]                                  kind TEXT
    out[p] = rotate(bank[kind][src[p]], table[kind], scale/a/b)  kind VIDEO / AUDIO (CRTE)
    out[p] = bank[IMAGE][src[p]]                                 kind IMAGE

This numpy version is the reference the fused C++/CUDA kernel (cpp_ext) must match; the runtime picks
the fastest implementation present and reports which one it used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vinci_edge import crte
from vinci_edge.kinds import Kind
from vinci_edge.plan import Plan


@dataclass(frozen=True)
class StitchInputs:
    """Everything a stitch implementation reads. `banks[k]` is (rows, D) for k in VIDEO/AUDIO/IMAGE."""

    plan: Plan
    text_table: np.ndarray  # (vocab, D)
    banks: dict[int, np.ndarray]
    tables: dict[int, crte.RotationTable | None]


def stitch_numpy(x: StitchInputs, out_dtype: np.dtype = np.float32) -> np.ndarray:
    plan = x.plan
    d = x.text_table.shape[1]
    out = np.empty((len(plan), d), dtype=out_dtype)
    text = plan.kind == Kind.TEXT
    out[text] = x.text_table[plan.src[text]]
    for k in (Kind.VIDEO, Kind.AUDIO, Kind.IMAGE):
        sel = plan.kind == k
        if not sel.any():
            continue
        rows = x.banks[k][plan.src[sel]]
        table = x.tables.get(k)
        if table is not None:
            rows = crte.apply_rotation(
                rows.astype(np.float64), table, plan.scale[sel], plan.a[sel], plan.b[sel]
            )
        out[sel] = rows
    return out
