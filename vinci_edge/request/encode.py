"""A prompt's media chunks -> the banks the plan indexes: each chunk encoded once, by its modality.

A chunk's rows are kept under its content id (a bounded cache, least recently used out), so asking
again about the same clip - or a live stream re-reading the chunks it already has - runs no
encoder. The banks are the rows of every chunk of one kind, concatenated in prompt order: the plan's
`src` indexes them.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from vinci_edge import metrics as m
from vinci_edge.kinds import MEDIA_KINDS, Kind
from vinci_edge.request.modality import Modality
from vinci_edge.request.prompt import Prompt
from vinci_edge.stages import Stages


class EncodedCache:
    """Encoder rows by content id; holds at most `max_chunks` chunks (0 keeps nothing)."""

    def __init__(self, max_chunks: int = 8) -> None:
        if max_chunks < 0:
            raise ValueError("max_chunks must be >= 0")
        self.max_chunks = max_chunks
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, chunk_id: str) -> np.ndarray | None:
        rows = self._rows.get(chunk_id)
        if rows is not None:
            self._rows.move_to_end(chunk_id)
        return rows

    def put(self, chunk_id: str, rows: np.ndarray) -> None:
        if self.max_chunks == 0:
            return
        self._rows[chunk_id] = rows
        self._rows.move_to_end(chunk_id)
        while len(self._rows) > self.max_chunks:
            self._rows.popitem(last=False)

    def __len__(self) -> int:
        return len(self._rows)


def encode_banks(
    prompt: Prompt,
    modalities: dict[Kind, Modality],
    stages: Stages,
    width: int,
    metrics: m.Metrics,
    cache: EncodedCache | None = None,
) -> dict[Kind, np.ndarray]:
    """Every media chunk's rows, by kind, in bank order; `width` is the LLM's hidden size."""
    rows: dict[Kind, list[np.ndarray]] = {k: [] for k in MEDIA_KINDS}
    for chunk in prompt.encoded_chunks:
        out = cache.get(chunk.id) if cache is not None else None
        if out is None:
            out = modalities[chunk.kind].encode(chunk, stages, metrics)
            if cache is not None:
                cache.put(chunk.id, out)
        else:
            metrics.counters["cached_chunks"] = metrics.counters.get("cached_chunks", 0) + 1
        rows[chunk.kind].append(out)
    banks = {k: np.concatenate(r) if r else np.zeros((0, width), np.float32) for k, r in rows.items()}
    for k, n in prompt.plan.bank_rows.items():
        if banks[k].shape[0] != n:
            raise RuntimeError(f"the {k.label} bank has {banks[k].shape[0]} rows, the plan needs {n}")
    return banks
