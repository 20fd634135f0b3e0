"""One metrics object for a request: stage timings keyed by constant stage names, plus counters.

Every stage of a request (reference or runtime) is timed through `Metrics.stage(NAME)`, so the
`--json` output, the profiler and its trace files all read the same records. `on_stage`, when set,
is told each stage as it starts (the command line says what a request is doing with it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# Stage names, in request order.
MEDIA_DECODE = "media_decode"
FRAME_PREPROCESS = "frame_preprocess"
LOG_MEL = "log_mel"
TOKENIZE = "tokenize"
VISION = "vision"
AUDIO = "audio"
STITCH = "stitch"  # TEG plan gather + CRTE
PREFILL = "prefill"
DECODE = "decode"  # one record per generated token after the first

STAGES = (MEDIA_DECODE, FRAME_PREPROCESS, LOG_MEL, TOKENIZE, VISION, AUDIO, STITCH, PREFILL, DECODE)

# Session creation, one record per stage graph. Not a request stage: an engine pays it once, so the
# profiler reports it apart from the per-request times (see Pipeline.load_metrics).
LOAD = "load"

# Told a stage's name and attributes as the stage starts.
StageListener = Callable[[str, dict[str, Any]], None]


@dataclass
class StageRecord:
    name: str
    start_ns: int
    end_ns: int
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass
class Metrics:
    records: list[StageRecord] = field(default_factory=list)
    counters: dict[str, Any] = field(default_factory=dict)
    origin_ns: int = field(default_factory=time.perf_counter_ns)
    first_token_ns: int | None = None
    end_ns: int | None = None
    on_stage: StageListener | None = field(default=None, repr=False, compare=False)

    @contextmanager
    def stage(self, name: str, **attrs: Any) -> Iterator[dict[str, Any]]:
        """Time a block; the yielded dict may be filled with attributes while it runs."""
        if self.on_stage is not None:
            self.on_stage(name, attrs)
        start = time.perf_counter_ns()
        try:
            yield attrs
        finally:
            self.records.append(StageRecord(name, start, time.perf_counter_ns(), attrs))

    def mark_first_token(self) -> None:
        if self.first_token_ns is None:
            self.first_token_ns = time.perf_counter_ns()

    def finish(self) -> None:
        self.end_ns = time.perf_counter_ns()

    def totals(self) -> dict[str, float]:
        """Seconds spent per stage (summed over repeated records such as decode steps)."""
        out: dict[str, float] = {}
        for r in self.records:
            out[r.name] = out.get(r.name, 0.0) + r.seconds
        return out

    def durations(self, name: str) -> list[float]:
        return [r.seconds for r in self.records if r.name == name]

    @property
    def time_to_first_token(self) -> float | None:
        if self.first_token_ns is None:
            return None
        return (self.first_token_ns - self.origin_ns) / 1e9

    @property
    def end_to_end(self) -> float | None:
        return None if self.end_ns is None else (self.end_ns - self.origin_ns) / 1e9

    def decode_tokens_per_second(self) -> float | None:
        steps = self.durations(DECODE)
        return len(steps) / sum(steps) if steps and sum(steps) > 0 else None

    def summary(self) -> dict[str, Any]:
        """The `timings` object of `--json` output (seconds)."""
        totals = self.totals()
        return {
            "stages": {k: round(v, 6) for k, v in totals.items()},
            "time_to_first_token": self.time_to_first_token,
            "end_to_end": self.end_to_end,
            "decode_tokens_per_second": self.decode_tokens_per_second(),
            "decode_steps": len(self.durations(DECODE)),
            **({"counters": self.counters} if self.counters else {}),
        }
