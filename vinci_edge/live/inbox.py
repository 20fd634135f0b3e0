"""The inbox: what sources deliver, waiting for the session's worker, in bounded queues.

Each source pushes through its own `SourceSink`: frames are sampled at `fps` (the first frame of
each 1/fps slot) before they are queued, audio blocks go to the taps (the voice-activity detector)
and then to their queue. A real-time source whose packet does not fit is not made to wait: the
packet is dropped and counted. A file played as fast as possible waits for room instead, so it
loses nothing and gives the same packets every time.

The inbox also knows how far each stream has got (`watermark`): the worker closes a segment once
no stream can still deliver media before its end.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from vinci_edge.kinds import Kind
from vinci_edge.live import packets
from vinci_edge.live.packets import Source
from vinci_edge.live.segments import FrameSampler

AudioTap = Callable[[float, np.ndarray], None]
Notify = Callable[[str, str, str], None]  # (source, kind, message)


class Inbox:
    """Bounded frame and audio queues shared by the sources' threads and the worker, under `cond`."""

    def __init__(
        self,
        cond: threading.Condition,
        fps: float,
        sample_rate: int,
        max_frames: int,
        max_audio_seconds: float,
        stopping: threading.Event,
        notify: Notify,
    ) -> None:
        self.cond = cond
        self.sample_rate = sample_rate
        self.max_frames = max_frames
        self.max_audio_seconds = max_audio_seconds
        self.stopping = stopping  # a file played fast stops waiting for room
        self.notify = notify
        self.frames: deque[tuple[float, np.ndarray]] = deque()
        self.audio: deque[tuple[float, np.ndarray]] = deque()
        self.audio_seconds = 0.0
        self.sampler = FrameSampler(fps)
        self.seen = {Kind.VIDEO: -1.0, Kind.AUDIO: -1.0}  # latest stream time delivered per stream
        self.inflight: float | None = None  # a frame being converted by its source, not yet queued
        self.streams: dict[Kind, str] = {}  # stream -> the source delivering it
        self.ended: set[str] = set()
        self.latest: tuple[float, np.ndarray] | None = None  # the newest frame sampled
        self.taps: list[AudioTap] = []
        self.counters = dict.fromkeys(
            ("frames_seen", "frames_sampled", "frames_dropped", "audio_blocks", "audio_blocks_dropped"), 0
        )

    # ---- the worker's side (the lock held) ------------------------------------------------------
    def pending(self) -> bool:
        """Media queued, or a frame on its way."""
        return bool(self.frames or self.audio) or self.inflight is not None

    def sources_done(self) -> bool:
        return set(self.streams.values()) <= self.ended

    def watermark(self, kind: Kind) -> float:
        """Stream time before which no more `kind` media will reach the worker."""
        queue = self.frames if kind == Kind.VIDEO else self.audio
        if queue:
            return queue[0][0]
        if kind == Kind.VIDEO and self.inflight is not None:
            return self.inflight
        if self.streams.get(kind) in self.ended:
            return float("inf")
        return self.seen[kind]

    def queued_before(self, t: float) -> bool:
        return any(q and q[0][0] < t for q in (self.frames, self.audio))

    def pop(self) -> tuple[Kind, float, np.ndarray] | None:
        """The older of the queued frame and audio block."""
        if not self.frames and not self.audio:
            return None
        if self.frames and (not self.audio or self.frames[0][0] <= self.audio[0][0]):
            t, rgb = self.frames.popleft()
            return Kind.VIDEO, t, rgb
        t, samples = self.audio.popleft()
        self.audio_seconds -= samples.size / self.sample_rate
        return Kind.AUDIO, t, samples

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            "queued_frames": len(self.frames),
            "queued_audio_seconds": round(self.audio_seconds, 3),
        }


class SourceSink:
    """Where one source delivers (the `packets.Sink` protocol)."""

    def __init__(self, inbox: Inbox, source: Source) -> None:
        self.inbox = inbox
        self.source = source

    def want_frame(self, t: float) -> bool:
        box = self.inbox
        with box.cond:
            box.counters["frames_seen"] += 1
            box.seen[Kind.VIDEO] = max(box.seen[Kind.VIDEO], t)
            wanted = box.sampler.wants(t)
            box.inflight = t if wanted else None  # a previous frame's conversion was abandoned
            box.cond.notify_all()
            return wanted

    def frame(self, t: float, rgb: np.ndarray) -> None:
        box = self.inbox
        with box.cond:
            box.inflight = None
            if not box.sampler.wants(t):
                return
            box.sampler.take(t)
            box.counters["frames_sampled"] += 1
            box.latest = (t, rgb)
            if not self._room(lambda: len(box.frames) < box.max_frames):
                box.counters["frames_dropped"] += 1
                return
            box.frames.append((t, rgb))
            box.cond.notify_all()

    def audio(self, t: float, samples: np.ndarray) -> None:
        box = self.inbox
        seconds = samples.size / box.sample_rate
        for tap in list(box.taps):
            with contextlib.suppress(Exception):  # a tap's bug must not stop the stream
                tap(t, samples)
        with box.cond:
            box.counters["audio_blocks"] += 1
            box.seen[Kind.AUDIO] = max(box.seen[Kind.AUDIO], t + seconds)
            if not self._room(lambda: box.audio_seconds + seconds <= box.max_audio_seconds):
                box.counters["audio_blocks_dropped"] += 1
                return
            box.audio.append((t, np.asarray(samples, np.float32)))
            box.audio_seconds += seconds
            box.cond.notify_all()

    def _room(self, has_room: Callable[[], bool]) -> bool:
        """Whether a packet fits (the lock held); a file played fast waits for it."""
        if self.source.realtime:
            return has_room()
        while not has_room():
            if self.inbox.stopping.is_set():
                return False
            self.inbox.cond.wait(0.1)
        return True

    def notice(self, source: str, kind: str, message: str) -> None:
        box = self.inbox
        with box.cond:
            if kind == packets.ENDED:
                if source in box.ended:
                    return
                box.ended.add(source)
            box.cond.notify_all()
        box.notify(source, kind, message)
