"""What every stitch implementation reads: the plan's five columns, the text embedding table, the
media banks and the CRTE tables.

The plan is typed as a Protocol (`PlanColumns`) so the stitch depends on no request or timeline code:
`vinci_edge.timeline.Plan` satisfies it, and so does the bare `StitchPlan` below (what tests, the
torch op and the device upload build when they need a plan of their own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import DTypeLike

from vinci_edge.crte import RotationTable


class PlanColumns(Protocol):
    """Per LLM position p: kind[p] (a `Kind` code, int8), src[p] (row of that kind's source, int64)
    and the CRTE coordinates scale[p], a[p], b[p] (float64); len() is the number of positions."""

    @property
    def kind(self) -> np.ndarray: ...
    @property
    def src(self) -> np.ndarray: ...
    @property
    def scale(self) -> np.ndarray: ...
    @property
    def a(self) -> np.ndarray: ...
    @property
    def b(self) -> np.ndarray: ...
    def __len__(self) -> int: ...


@dataclass(frozen=True)
class StitchPlan:
    """The five columns and nothing else: a `PlanColumns` for callers without a timeline plan."""

    kind: np.ndarray
    src: np.ndarray
    scale: np.ndarray
    a: np.ndarray
    b: np.ndarray

    def __len__(self) -> int:
        return int(self.kind.size)


@dataclass(frozen=True)
class StitchInputs:
    """Everything a stitch implementation reads. `banks[k]` is (rows, D) for k in VIDEO/AUDIO/IMAGE;
    `tables[k]` is that kind's CRTE table, None for a plain gather (images, an encoder without time)."""

    plan: PlanColumns
    text_table: np.ndarray  # (vocab, D)
    banks: Mapping[int, np.ndarray]
    tables: Mapping[int, RotationTable | None]


class Stitch(Protocol):
    """The signature every host stitch shares (numpy, the C++ kernel, the CUDA kernel behind a
    host-to-device copy): inputs_embeds (len(plan), D) in `out_dtype`."""

    def __call__(self, x: StitchInputs, out_dtype: DTypeLike = np.float32) -> np.ndarray: ...
