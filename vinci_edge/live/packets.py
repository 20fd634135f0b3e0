"""What live sources deliver, stamped by one monotonic stream clock.

A source pushes into a `Sink` (the live session is one): video frames as RGB arrays, audio blocks
as mono float32 samples at the model's rate, and notices (a connection lost, restored, the source
ended). Every time is seconds on the session's `StreamClock`, rounded to the millisecond, so a
camera and a microphone read by two threads share one time axis - the axis CRTE rotates by.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import numpy as np

# Notices a source gives besides media
LOST = "lost"  # the connection or device went away; the source is trying again
RECONNECTED = "reconnected"
ENDED = "ended"  # no more media will come (a file played to its end, stop requested, gave up)
NOTICE = "notice"  # anything else worth telling the user (e.g. "no audio track: video only")

TICKS_PER_SECOND = 1000  # stream times are kept in milliseconds


def stamp(seconds: float) -> float:
    """A time on the stream clock's millisecond grid."""
    return round(seconds * TICKS_PER_SECOND) / TICKS_PER_SECOND


class StreamClock:
    """Seconds since the session started, from `time.monotonic` (never jumps with the wall clock)."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def now(self) -> float:
        return stamp(time.monotonic() - self._t0)

    def sleep_until(self, t: float, stop: threading.Event) -> bool:
        """Wait until stream time `t`; False when `stop` was set first."""
        delay = t - (time.monotonic() - self._t0)
        return not stop.wait(delay) if delay > 0 else not stop.is_set()


class Sink(Protocol):
    """Where a source delivers. `frame` and `audio` may block (a file read as fast as the session
    takes it) or drop and count (a real-time source whose consumer falls behind)."""

    def want_frame(self, t: float) -> bool:
        """Whether a frame at stream time `t` would be used: a source asks before converting one
        (decoding to RGB costs more than the question)."""
        ...

    def frame(self, t: float, rgb: np.ndarray) -> None:
        """An (H, W, 3) uint8 frame shown at stream time `t`."""
        ...

    def audio(self, t: float, samples: np.ndarray) -> None:
        """Mono float32 samples at the session's sample rate, the first one at stream time `t`."""
        ...

    def notice(self, source: str, kind: str, message: str) -> None:
        """LOST / RECONNECTED / ENDED / NOTICE, with one line for the user."""
        ...


class Source(Protocol):
    """A camera, a microphone, a network stream or a file played as if live."""

    name: str  # what messages call it (a path, a URL, "camera 0", "microphone")
    video: bool  # delivers frames
    audio: bool  # delivers audio
    realtime: bool  # False: a file read as fast as the sink takes it (the sink blocks, never drops)

    def run(self, clock: StreamClock, sink: Sink, stop: threading.Event) -> None:
        """Deliver until the source ends or `stop` is set, reconnecting by itself where it can; the
        last call to the sink is `notice(name, ENDED, why)`. Never raises for a source failure: it is
        a notice."""
        ...
