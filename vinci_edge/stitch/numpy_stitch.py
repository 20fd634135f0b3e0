"""The stitch in numpy: the reference every native implementation must reproduce.

    out[p] = text_table[src[p]]                                  kind TEXT
    out[p] = rotate(bank[kind][src[p]], table[kind], scale/a/b)  kind VIDEO / AUDIO (CRTE)
    out[p] = bank[IMAGE][src[p]]                                 kind IMAGE

Four passes over S x D (gather, widen to float64, rotate, narrow) where the C++/CUDA kernel makes one;
kept because it is short enough to be obviously right.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from vinci_edge import crte
from vinci_edge.kinds import MEDIA_KINDS, Kind
from vinci_edge.stitch.inputs import StitchInputs


def stitch_numpy(x: StitchInputs, out_dtype: DTypeLike = np.float32) -> np.ndarray:
    """inputs_embeds (len(plan), D) in `out_dtype`; CRTE in float64, rounded once."""
    plan = x.plan
    d = x.text_table.shape[1]
    out = np.empty((len(plan), d), dtype=out_dtype)
    text = plan.kind == Kind.TEXT
    out[text] = x.text_table[plan.src[text]]
    for k in MEDIA_KINDS:
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
