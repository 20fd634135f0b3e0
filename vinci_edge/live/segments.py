"""Stream time -> live segments: which frames and which audio samples each one holds.

Segment k covers [k * L, (k + 1) * L) seconds of the stream clock (L = `chunk_seconds`). It becomes
one TEG group in the prompt - its frames, "\\n", its audio, "\\n" - as the official code groups a
video and its track by time. Frames are sampled at `fps` (the first frame of each 1/fps slot) and a
static-frame filter may skip those nearly identical to the last one encoded; audio samples are laid
on the stream's sample grid by their time (a gap is silence, an overlap keeps the first copy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class OpenSegment:
    """A segment still taking frames: each frame's time and vision tokens as they were encoded."""

    index: int
    t0: float
    t1: float
    frame_times: list[float] = field(default_factory=list)
    frame_tokens: list[np.ndarray] = field(default_factory=list)  # (tokens_per_frame, D) each
    frame_pixels: list[np.ndarray] = field(default_factory=list)  # kept only with keep_inputs
    last_rgb: tuple[float, np.ndarray] | None = None  # its newest frame, for answers and alerts
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds spent on it so far

    def add_time(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


def segment_index(t: float, chunk_seconds: float) -> int:
    # a frame stamped exactly on a boundary belongs to the segment it starts
    return int(math.floor(t / chunk_seconds + 1e-9))


class FrameSampler:
    """Takes the first frame of each 1/fps slot of stream time (a camera's 30 fps -> `fps`)."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.last_slot: int | None = None

    def _slot(self, t: float) -> int:
        return int(math.floor(t * self.fps + 1e-9))

    def wants(self, t: float) -> bool:
        return self.last_slot is None or self._slot(t) > self.last_slot

    def take(self, t: float) -> None:
        self.last_slot = self._slot(t)


class StaticFilter:
    """Skips a frame whose 32 x 32 grey thumbnail differs from the last encoded one's by less than
    `threshold` (mean absolute difference, 0..1)."""

    SIDE = 32

    def __init__(self, threshold: float | None) -> None:
        self.threshold = threshold
        self.last: np.ndarray | None = None

    def thumbnail(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        rows = (np.arange(self.SIDE) * h) // self.SIDE
        cols = (np.arange(self.SIDE) * w) // self.SIDE
        return rgb[rows][:, cols].astype(np.float32).mean(axis=2) / 255.0

    def is_static(self, rgb: np.ndarray) -> bool:
        """Whether to skip this frame; a frame that is kept becomes the one compared against."""
        if self.threshold is None:
            return False
        thumb = self.thumbnail(rgb)
        if self.last is not None and float(np.abs(thumb - self.last).mean()) < self.threshold:
            return True
        self.last = thumb
        return False


class AudioBuffer:
    """Samples on the stream's sample grid; segments take theirs out in order."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.start = 0  # sample index of data[0]
        self.data = np.zeros(0, np.float32)
        self.filled_until: int | None = None  # sample index after the last sample written

    @property
    def until(self) -> float | None:
        """Stream time up to which audio has arrived."""
        return None if self.filled_until is None else self.filled_until / self.rate

    def add(self, t: float, samples: np.ndarray) -> int:
        """Lay `samples` at time `t`; returns how many were kept (an overlap keeps the first copy)."""
        i0 = int(round(t * self.rate))
        if self.filled_until is None:
            self.start = self.filled_until = i0
        if i0 < self.filled_until:
            samples = samples[self.filled_until - i0 :]
            i0 = self.filled_until
        if samples.size == 0:
            return 0
        end = i0 + samples.size
        if end - self.start > self.data.size:
            grown = np.zeros(max(end - self.start, 2 * self.data.size), np.float32)
            grown[: self.data.size] = self.data
            self.data = grown
        self.data[i0 - self.start : end - self.start] = samples  # a gap before i0 stays zeros
        self.filled_until = end
        return int(samples.size)

    def take(self, t0: float, t1: float) -> np.ndarray | None:
        """The samples of [t0, t1) that have arrived (cut at the last one), and forget everything
        before t1; None when none of that range has arrived."""
        i0, i1 = int(round(t0 * self.rate)), int(round(t1 * self.rate))
        if self.filled_until is None or self.filled_until <= i0:
            return None
        i1 = min(i1, self.filled_until)
        out = np.zeros(i1 - i0, np.float32)
        lo = max(i0, self.start)
        if i1 > lo:
            out[lo - i0 :] = self.data[lo - self.start : i1 - self.start]
        drop = max(0, i1 - self.start)
        self.data = self.data[drop:].copy()
        self.start += drop
        return out
