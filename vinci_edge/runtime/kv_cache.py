"""The device-resident KV cache of the portable decoder graph, as bookkeeping: which buffer and which
shape each past / present tensor is bound to at each call, and the CUDA-graph cache of decode steps.

The portable graph's contract (docs/portable-decoder.md): inputs `past_key_{i}` / `past_value_{i}` of
shape (1, kv_heads, P, head_dim), outputs `present_key_{i}` / `present_value_{i}` of shape
(1, kv_heads, P + S, head_dim), every tensor dense (TensorRT binds an address and a shape; it takes no
strides). Head h of a past tensor therefore starts at element h * P * head_dim, and head h of the
present at h * (P + S) * head_dim.

**Why two buffers (ping-pong), not one.** Binding present to the very buffer past is read from looks
free (the graph copies past into the first P rows of present anyway), but with a dense head-major
layout the head stride changes from P to P + S: the present's head 1 starts where the past's head 1
still has rows to be read, so the graph overwrites cache it has not read yet. It is only safe with one
KV head, and TensorRT never promises to read every input before writing an output. So each layer
tensor has two max-context buffers: call n reads past from side A and writes present to side B, call
n + 1 reads B (whose dense layout for P' = P + S is exactly what was written) and writes A. Nothing is
copied beyond what the graph itself does; the price is twice the KV memory (docs/gpu.md has the
table). `tests/test_backends.py` runs this bookkeeping against a numpy "graph" and shows the
single-buffer binding corrupting a 2-head cache.

Rewinding (a live session drops a question) changes P, hence the layout: `rewind` returns the copies
that re-lay the kept rows out from the current side into the other one, then flips sides.

Pure Python: the device module turns sides and element offsets into addresses.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KVBinding:
    """One call's binding of one layer tensor (`kind` "key" / "value" of layer `layer`)."""

    layer: int
    kind: str
    past_side: int  # 0 / 1: which buffer past is read from
    present_side: int  # the other one
    past_shape: tuple[int, int, int, int]
    present_shape: tuple[int, int, int, int]

    @property
    def past_name(self) -> str:
        return f"past_{self.kind}_{self.layer}"

    @property
    def present_name(self) -> str:
        return f"present_{self.kind}_{self.layer}"


@dataclass(frozen=True)
class Copy:
    """Copy `count` elements from (side, element offset) to (side, element offset) of one tensor."""

    src_side: int
    src: int
    dst_side: int
    dst: int
    count: int


class PingPongKV:
    """Which side holds the cache, and how long it is. `plan(s)` says how to bind a call that adds s
    positions; `commit(s)` records that it ran."""

    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, max_context: int) -> None:
        self.num_layers, self.kv_heads, self.head_dim = num_layers, kv_heads, head_dim
        self.max_context = max_context
        self.side = 0  # the side holding the current cache
        self.length = 0

    @property
    def elements(self) -> int:
        """Elements of one buffer (one side of one layer tensor): the max-context cache."""
        return self.kv_heads * self.max_context * self.head_dim

    @property
    def free(self) -> int:
        return self.max_context - self.length

    def plan(self, s: int) -> list[KVBinding]:
        if s < 1:
            raise ValueError("a decoder call adds at least one position")
        if self.length + s > self.max_context:
            raise ValueError(f"{self.length + s} positions do not fit the cache of {self.max_context}")
        past = (1, self.kv_heads, self.length, self.head_dim)
        present = (1, self.kv_heads, self.length + s, self.head_dim)
        return [
            KVBinding(layer, kind, self.side, 1 - self.side, past, present)
            for layer in range(self.num_layers)
            for kind in ("key", "value")
        ]

    def commit(self, s: int) -> None:
        self.length += s
        self.side = 1 - self.side

    def rewind(self, length: int) -> list[Copy]:
        """Keep the first `length` positions: the copies (per layer tensor, the same for each) that
        lay them out densely on the other side; the caller runs them on every tensor, then the cache
        lives there."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot rewind to {length} from {self.length}")
        if length == self.length:
            return []
        hd, old = self.head_dim, self.length
        copies = [
            Copy(self.side, h * old * hd, 1 - self.side, h * length * hd, length * hd)
            for h in range(self.kv_heads)
            if length
        ]
        self.side, self.length = 1 - self.side, length
        return copies

    def reset(self) -> None:
        self.length = 0


# --------------------------------------------------------------------------------------------------
# CUDA graphs of decode steps


class GraphCache:
    """Captured CUDA graphs of decode steps, by what the step binds (shapes and addresses).

    A graph replays exactly the kernels, shapes and addresses it captured. With the portable graph
    every decode step has a new P, so a step's key is new the first time a position is decoded; it
    repeats when the same positions are decoded again: each `--runs` of `vinci-edge profile`, a live
    session that rewinds to the same prefix and asks again, a server answering the same window. So a
    key is run eagerly the first time it is seen and captured the second (`capture` runs the step
    eagerly first, as TensorRT asks after a shape change, then records it: the step is done either
    way); from the third time on it replays. Least recently used graphs are dropped past
    `capacity` (each holds a little host and device memory)."""

    def __init__(self, capacity: int, capture: Callable[[], Any], release: Callable[[Any], None]) -> None:
        self.capacity = capacity
        self._capture, self._release = capture, release
        self.graphs: OrderedDict[Hashable, Any] = OrderedDict()
        self.seen: set[Hashable] = set()
        self.hits = self.captures = self.eager = 0

    def run(self, key: Hashable, eager: Callable[[], None], launch: Callable[[Any], None]) -> str:
        """Run the step bound as `key`: replay its graph, or run it eagerly (first sighting), or
        capture it (second sighting; `capture` runs it too). Returns which: "replay" / "eager" /
        "capture"."""
        if key in self.graphs:
            self.graphs.move_to_end(key)
            self.hits += 1
            launch(self.graphs[key])
            return "replay"
        if key not in self.seen or self.capacity == 0:
            self.seen.add(key)
            self.eager += 1
            eager()
            return "eager"
        self.seen.discard(key)
        self.graphs[key] = self._capture()  # runs the step, then records it
        self.captures += 1
        while len(self.graphs) > self.capacity:
            _, old = self.graphs.popitem(last=False)
            self._release(old)
        return "capture"

    def clear(self) -> None:
        for g in self.graphs.values():
            self._release(g)
        self.graphs.clear()
        self.seen.clear()
