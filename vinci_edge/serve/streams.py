"""The cameras a server streams: one live session each, admitted, kept apart, expired and closed.

    start         admission: at most `max_streams` open at once; past it a refusal that says so
    frame, audio  checked (a corrupt packet is refused with the reason; the stream goes on) and
                  queued on the camera's RemoteSource; its session encodes it on its own worker
    ask           the camera's session's question queue (answered in turn, or refused with a reason)
    end           the camera's media already sent are taken in, its queued questions answered, then
                  its session is closed and its state freed
    silence       a camera that sent nothing for `expire_seconds` (its client went away) is closed
                  the same way
    stop          new streams and questions are refused ("the server is stopping") and every open
                  stream is closed as by `end`: no question already queued is lost

Isolation: a request names its camera and touches that camera's session only; each session has its
own threads, queues and KV cache, and a bad packet is refused before it reaches them. One camera's
corrupt frames, errors or vanished client change nothing in another's answers.

Every `media` request gets a status: {"ok": true, ...counters} or {"ok": false, "reason": "..."}.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from vinci_edge.generation import GenerationConfig
from vinci_edge.live.answers import QuestionRefused
from vinci_edge.live.session import LiveSession
from vinci_edge.serve.remote_source import RemoteSource

START, FRAME, AUDIO, END = "start", "frame", "audio", "end"
KINDS = (START, FRAME, AUDIO, END)
STOPPING = "the server is stopping"
MAX_FRAME_SIDE = 8192  # pixels, either side
MAX_BLOCK_SECONDS = 10.0  # audio in one packet
MAX_STREAM_SECONDS = 1e7  # stream times beyond ~115 days are a client's bug
REMEMBERED = 1024  # closed cameras whose fate an `unknown camera` refusal can name

Status = dict[str, Any]


def refusal(reason: str) -> Status:
    return {"ok": False, "reason": reason}


def frame_problem(frame: np.ndarray | None) -> str | None:
    """Why a frame cannot be encoded, or None: it must be an (H, W, 3) uint8 RGB image."""
    if frame is None:
        return "a frame packet needs the `frame` input"
    if frame.dtype != np.uint8:
        return f"the frame is {frame.dtype}, not uint8 RGB"
    if frame.ndim != 3 or frame.shape[2] != 3:
        return f"the frame has shape {tuple(frame.shape)}, not (height, width, 3) RGB"
    height, width = frame.shape[:2]
    if not (1 <= height <= MAX_FRAME_SIDE and 1 <= width <= MAX_FRAME_SIDE):
        return f"the frame is {width}x{height} pixels; each side must be 1 to {MAX_FRAME_SIDE}"
    return None


def samples_problem(samples: np.ndarray | None, rate: int) -> str | None:
    """Why an audio block cannot be used, or None: mono float32 samples, finite, at most 10 s."""
    if samples is None:
        return "an audio packet needs the `samples` input"
    if samples.dtype != np.float32:
        return f"the samples are {samples.dtype}, not float32"
    if samples.ndim != 1 or samples.size == 0:
        return f"the samples have shape {tuple(samples.shape)}, not (n,) mono samples with n >= 1"
    if samples.size > rate * MAX_BLOCK_SECONDS:
        most = int(rate * MAX_BLOCK_SECONDS)
        return f"an audio packet holds at most {MAX_BLOCK_SECONDS:g} s ({most} samples)"
    if not np.isfinite(samples).all():
        return "the samples contain NaN or infinity"
    return None


def time_problem(t: float) -> str | None:
    if not math.isfinite(t) or not 0 <= t <= MAX_STREAM_SECONDS:
        return f"the stream time {t} is not a number of seconds in [0, {MAX_STREAM_SECONDS:g}]"
    return None


@dataclass
class Stream:
    """One open camera: its session, the source its media go through, and when it was last heard."""

    camera: str
    session: LiveSession
    source: RemoteSource
    opened_at: float
    last_seen: float
    refused: int = 0  # media packets refused (corrupt, out of range)

    def stats(self, now: float) -> dict[str, Any]:
        return {
            **self.session.stats(),
            **self.source.stats(),
            "media_refused": self.refused,
            "open_seconds": round(now - self.opened_at, 3),
            "idle_seconds": round(now - self.last_seen, 3),
        }


class Streams:
    """See the module docstring. Thread-safe: the served models call it from their own threads."""

    def __init__(
        self,
        open_session: Callable[[str], LiveSession],
        max_streams: int,
        expire_seconds: float,
        *,
        audio: bool,
        sample_rate: int,
        max_packets: int = 256,
        drain_seconds: float = 60.0,
        release: Callable[[LiveSession], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`open_session(camera)`: a new, unstarted session for a camera; `release(session)`: called
        once it is closed. `audio`: whether streams may carry audio (the engine has an audio stage).
        `drain_seconds`: how long a closing stream may take to take in what it was sent."""
        if max_streams < 1 or expire_seconds <= 0:
            raise ValueError("max_streams must be at least 1 and expire_seconds above 0")
        self.open_session = open_session
        self.release = release
        self.max_streams = max_streams
        self.expire_seconds = expire_seconds
        self.audio = audio
        self.sample_rate = sample_rate
        self.max_packets = max_packets
        self.drain_seconds = drain_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._open: dict[str, Stream] = {}
        self._starting: set[str] = set()  # admitted, session being made
        self._closers: set[threading.Thread] = set()
        self._gone: OrderedDict[str, str] = OrderedDict()  # camera -> how it was closed
        self._reaper: threading.Thread | None = None
        self._reaper_stop = threading.Event()
        self.stopping = False
        self.counters = dict.fromkeys(("admitted", "streams_refused", "ended", "expired", "stopped"), 0)

    # ---- one media request ----------------------------------------------------------------------
    def media(
        self,
        camera: str,
        kind: str,
        t: float,
        frame: np.ndarray | None = None,
        samples: np.ndarray | None = None,
    ) -> Status:
        """A `media` request: start | frame | audio | end for `camera` at stream time `t`."""
        if kind not in KINDS:
            return refusal(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
        if not camera:
            return refusal("the camera id is empty")
        if kind == START:
            return self.start(camera)
        problem = time_problem(t)
        stream, unknown = self._touch(camera)
        if stream is None:
            return refusal(unknown)
        if kind == END:
            return self.end(camera)
        if problem is None:
            problem = frame_problem(frame) if kind == FRAME else self._samples_problem(samples)
        if problem is not None:
            with self._lock:
                stream.refused += 1
            return refusal(f"camera {camera!r}: {problem}")
        # the request's arrays may live in memory the transport reuses: the queue keeps copies
        if kind == FRAME:
            queued = stream.source.put_frame(t, np.array(frame, copy=True))
        else:
            queued = stream.source.put_audio(t, np.array(samples, copy=True))
        return {"ok": True, "queued": queued, **stream.source.stats()}

    def _samples_problem(self, samples: np.ndarray | None) -> str | None:
        if not self.audio:
            return "this engine has no audio stage: send frames only"
        return samples_problem(samples, self.sample_rate)

    def _touch(self, camera: str) -> tuple[Stream | None, str]:
        """The camera's open stream, now heard from; or None and why it is not streaming."""
        with self._lock:
            stream = self._open.get(camera)
            if stream is not None:
                stream.last_seen = self.clock()
                return stream, ""
            return None, self._unknown(camera)

    def _unknown(self, camera: str) -> str:
        """Why `camera` has no open stream (the lock held)."""
        if self.stopping:
            return STOPPING
        how = self._gone.get(camera)
        if how == "expired":
            return (
                f"camera {camera!r} was closed after {self.expire_seconds:g} s without media "
                "(--expire-seconds): send start to stream again"
            )
        if how is not None:
            return f"camera {camera!r} has ended its stream: send start to stream again"
        return f"unknown camera {camera!r}: send start first"

    # ---- opening and closing --------------------------------------------------------------------
    def start(self, camera: str) -> Status:
        """Open a stream for `camera`, if admitted."""
        with self._lock:
            reason = self._admission(camera)
            if reason is None:
                self._starting.add(camera)
            else:
                self.counters["streams_refused"] += 1
        if reason is not None:
            return refusal(reason)
        try:
            stream = self._open_stream(camera)
        except Exception as exc:  # the engine or the server could not make it: say why, admit no one
            with self._lock:
                self._starting.discard(camera)
            return refusal(f"camera {camera!r}: the stream could not start: {type(exc).__name__}: {exc}")
        with self._lock:
            self._starting.discard(camera)
            self._open[camera] = stream
            self._gone.pop(camera, None)
            self.counters["admitted"] += 1
            count = len(self._open)
        return {"ok": True, "camera": camera, "streams": count, "limit": self.max_streams}

    def _admission(self, camera: str) -> str | None:
        """Why `camera` may not open a stream now (the lock held), or None."""
        if self.stopping:
            return STOPPING
        if camera in self._open or camera in self._starting:
            return f"camera {camera!r} is already streaming: send end first, or wait until it expires"
        count = len(self._open) + len(self._starting)
        if count >= self.max_streams:
            return (
                f"the stream limit is reached: {count} of {self.max_streams} streams are open "
                "(--max-streams); try again when one ends"
            )
        return None

    def _open_stream(self, camera: str) -> Stream:
        session = self.open_session(camera)
        source = RemoteSource(camera, self.audio, self.max_packets)
        try:
            session.start([source])
        except Exception:
            if self.release is not None:
                self.release(session)
            raise
        now = self.clock()
        return Stream(camera, session, source, now, now)

    def end(self, camera: str) -> Status:
        """The client's last packet: take in what it sent, answer its questions, then close."""
        with self._lock:
            stream = self._open.pop(camera, None)
            if stream is None:
                return refusal(self._unknown(camera))
        self._close(stream, "ended")
        return {"ok": True, "camera": camera, "ended": True, **stream.source.stats()}

    def expire(self) -> list[str]:
        """Close every camera silent for `expire_seconds`; their ids."""
        now = self.clock()
        with self._lock:
            silent = [s for s in self._open.values() if now - s.last_seen >= self.expire_seconds]
            for stream in silent:
                del self._open[stream.camera]
        for stream in silent:
            self._close(stream, "expired")
        return [s.camera for s in silent]

    def _close(self, stream: Stream, how: str) -> None:
        """Close a stream taken out of the open ones, on a thread of its own: its media are taken
        in, its questions answered (a new one is refused), then its state is freed."""
        stream.source.end()
        closer = threading.Thread(
            target=self._finish, args=(stream,), name=f"serve-close-{stream.camera}", daemon=True
        )
        with self._lock:
            self.counters[how] += 1
            self._gone[stream.camera] = how
            while len(self._gone) > REMEMBERED:
                self._gone.popitem(last=False)
            self._closers.add(closer)
        closer.start()

    def _finish(self, stream: Stream) -> None:
        try:
            stream.session.join(timeout=self.drain_seconds)
            stream.session.stop()
        finally:
            if self.release is not None:
                self.release(stream.session)
            with self._lock:
                self._closers.discard(threading.current_thread())

    # ---- questions ------------------------------------------------------------------------------
    def ask(
        self,
        camera: str,
        question: str,
        gen: GenerationConfig,
        until: float | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Future:
        """Queue a question on the camera's session: a future of its `LiveAnswer`; a refusal
        (`QuestionRefused`) is raised here or set on the future, always with the reason."""
        if until is not None and time_problem(until) is not None:
            raise QuestionRefused(f"until: {time_problem(until)}")
        with self._lock:
            if self.stopping:
                raise QuestionRefused(STOPPING)
            stream = self._open.get(camera)
            if stream is None:
                raise QuestionRefused(self._unknown(camera))
            stream.last_seen = self.clock()
        return stream.session.submit(question, gen=gen, until=until, on_text=on_text, origin="serve")

    # ---- the server's life ----------------------------------------------------------------------
    def start_reaper(self) -> None:
        """Expire silent cameras from now on (a thread checks a few times per `expire_seconds`)."""
        period = min(1.0, self.expire_seconds / 4)

        def reap() -> None:
            while not self._reaper_stop.wait(period):
                self.expire()

        self._reaper = threading.Thread(target=reap, name="serve-expire", daemon=True)
        self._reaper.start()

    def stop(self, timeout: float = 120.0) -> None:
        """Refuse new streams and questions; close every stream as by `end` and wait for them."""
        with self._lock:
            self.stopping = True
            streams = list(self._open.values())
            self._open.clear()
        self._reaper_stop.set()
        for stream in streams:
            self._close(stream, "stopped")
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                closers = list(self._closers)
            if not closers:
                break
            closers[0].join(max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                break
        if self._reaper is not None:
            self._reaper.join(5.0)

    def stats(self) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            streams = dict(self._open)
            summary = {
                "limit": self.max_streams,
                "expire_seconds": self.expire_seconds,
                "closing": len(self._closers),
                "stopping": self.stopping,
                **self.counters,
            }
        return {"streams": {camera: s.stats(now) for camera, s in streams.items()}, **summary}
