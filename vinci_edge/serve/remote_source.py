"""A camera served over the network, as a live source: what its client sends through the `media`
model, read by the camera's `LiveSession` like any other source.

The `media` model puts each frame and audio block into a bounded queue and returns at once; the
session's source thread drains the queue into the session. The source is real-time: a packet that
does not fit the queue is dropped and counted (a camera does not wait for a server that falls
behind), and the session drops what its own queues cannot take the same way. Times are the
client's stream clock (seconds), as sent. `end()` is the client's last word: what is queued is
still delivered, then the source ends. A session that stops (`stop` set) gets what is queued too.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np

from vinci_edge.live.packets import ENDED, Sink, StreamClock

FRAME = "frame"
AUDIO = "audio"


class RemoteSource:
    """One camera's media as its client sends them (the `vinci_edge.live.packets.Source` protocol)."""

    realtime = True  # a full queue drops: a live camera never waits for the server

    def __init__(self, camera: str, audio: bool, max_packets: int = 256) -> None:
        """`audio`: whether the stream may carry audio (the engine has an audio stage);
        `max_packets`: frames and audio blocks waiting for the session, at most."""
        if max_packets < 1:
            raise ValueError("max_packets must be at least 1")
        self.name = f"camera {camera}"
        self.video = True
        self.audio = audio
        self.max_packets = max_packets
        self._queue: deque[tuple[str, float, np.ndarray]] = deque()
        self._cond = threading.Condition()
        self._ended = False
        self.counters = dict.fromkeys(("frames_received", "audio_blocks_received", "packets_dropped"), 0)

    # ---- the media model's side ---------------------------------------------------------------------
    def put_frame(self, t: float, rgb: np.ndarray) -> bool:
        """Queue an (H, W, 3) uint8 frame at stream time `t`; False when it was dropped."""
        return self._put(FRAME, t, rgb, "frames_received")

    def put_audio(self, t: float, samples: np.ndarray) -> bool:
        """Queue mono float32 samples whose first is at stream time `t`; False when dropped."""
        return self._put(AUDIO, t, samples, "audio_blocks_received")

    def _put(self, kind: str, t: float, data: np.ndarray, counter: str) -> bool:
        with self._cond:
            self.counters[counter] += 1
            if self._ended or len(self._queue) >= self.max_packets:
                self.counters["packets_dropped"] += 1
                return False
            self._queue.append((kind, t, data))
            self._cond.notify_all()
            return True

    def end(self) -> None:
        """No more media: what is queued is delivered, then `run` returns."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    @property
    def ended(self) -> bool:
        with self._cond:
            return self._ended

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {**self.counters, "queued_packets": len(self._queue)}

    # ---- the session's side -------------------------------------------------------------------------
    def run(self, clock: StreamClock, sink: Sink, stop: threading.Event) -> None:
        """Deliver the queue to `sink` until the client ends the stream or `stop` is set; either way
        what is queued is delivered first (a real-time sink drops rather than waits)."""
        while True:
            with self._cond:
                while not self._queue and not self._ended and not stop.is_set():
                    self._cond.wait(0.1)
                if not self._queue:
                    break
                kind, t, data = self._queue.popleft()
            if kind == FRAME:
                if sink.want_frame(t):
                    sink.frame(t, data)
            else:
                sink.audio(t, data)
        sink.notice(self.name, ENDED, "the client ended the stream" if self.ended else "stopped")
