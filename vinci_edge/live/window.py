"""The window: what the live session's KV cache holds, entry by entry, and what to evict when full.

The cache holds the chat template's head (with the system prompt), then entries in time order:
each live segment's chunks, and - when a conversation is kept - each question with its answer. An
entry keeps the embeddings it was appended with (the stitch's output, which depends on the entry
alone, not on where it sits in the cache), so eviction never re-encodes anything.

When the cache would overflow, the oldest entries go in one large step, down to `keep_fraction` of
the space after the head: the head stays (its tokens are the attention sinks the model leans on),
the most recent media stay, and the kept entries are prefilled again from their stored embeddings.
The LLM's own rotary positions are the cache positions, so kept entries cannot simply be shifted:
one prefill of the kept positions is the price, paid once per eviction rather than per question,
and it keeps the cache exactly what a from-scratch prefill of the same chunks would give.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from vinci_edge.request.chunks import Chunk, TextChunk


@dataclass
class Entry:
    """One thing appended after the head: a segment (`t0`..`t1`) or a kept conversation turn."""

    chunks: list[Chunk]
    embeds: np.ndarray  # (positions, D) as appended
    t0: float | None = None
    t1: float | None = None

    @property
    def positions(self) -> int:
        return int(self.embeds.shape[0])


class Window:
    def __init__(self, head: TextChunk, limit: int, keep_fraction: float) -> None:
        """`limit`: positions the cache may hold before a question's are added."""
        self.head = head
        self.limit = limit
        self.keep_fraction = keep_fraction
        self.entries: deque[Entry] = deque()
        self.media_positions = 0  # in entries

    @property
    def positions(self) -> int:
        return len(self.head.ids) + self.media_positions

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        self.media_positions += entry.positions

    def fits(self, extra: int) -> bool:
        return self.positions + extra <= self.limit

    def evict_for(self, extra: int) -> list[Entry]:
        """Drop the oldest entries so that `extra` more positions fit with room to spare (down to
        `keep_fraction` of the space after the head); returns what was dropped."""
        room = self.limit - len(self.head.ids)
        target = min(int(self.keep_fraction * room), room - extra)
        dropped: list[Entry] = []
        while self.entries and self.media_positions > target:
            e = self.entries.popleft()
            self.media_positions -= e.positions
            dropped.append(e)
        return dropped

    def kept_embeds(self) -> np.ndarray | None:
        """The entries' embeddings in order, for the prefill after an eviction."""
        return np.concatenate([e.embeds for e in self.entries]) if self.entries else None

    def chunks(self) -> list[Chunk]:
        """The head and every entry's chunks: the prompt the cache holds, less the question."""
        return [self.head] + [c for e in self.entries for c in e.chunks]

    @property
    def t0(self) -> float | None:
        return next((e.t0 for e in self.entries if e.t0 is not None), None)
