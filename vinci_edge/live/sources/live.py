"""Running a live source: a worker thread that connects, reads and reconnects; the caller's thread
that delivers to the sink and answers `stop` at once.

Reading a network stream or a device blocks in FFmpeg, PortAudio or OpenCV: opening an RTSP stream
takes seconds, a listening socket waits for a sender, a stalled server is noticed only when a read
timeout runs out. `stop` cannot interrupt those calls, so they run in a worker thread that hands
what it read over a short queue, and `LiveRunner.run` (in the thread the session started) delivers
it, checking `stop` ten times a second: it returns within about 0.1 s of `stop`, whatever the worker
is blocked in. The worker notices `stop` when its call returns (each is bounded by a timeout) and
ends on its own; it never calls the sink, so nothing reaches the sink after ENDED.

A connection that fails or ends is reported once (LOST) and tried again: at once if media flowed in
it, else after a back-off that doubles from `Retry.first_delay` up to `Retry.max_delay`; media
flowing again is RECONNECTED.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np

from vinci_edge.live.packets import ENDED, LOST, RECONNECTED, Sink, StreamClock

POLL_SECONDS = 0.1  # how often the delivering thread looks at `stop`
MIN_LISTEN_SECONDS = 0.2  # a wait for a sender that ends sooner is followed by a pause this long
QUEUE_ITEMS = 64  # items read ahead of the sink; the worker waits when the sink falls this far behind


@dataclass(frozen=True)
class Retry:
    """How a lost source is tried again."""

    first_delay: float = 0.5  # seconds before the second try after a failed one
    max_delay: float = 8.0  # the delay doubles up to this
    max_retries: int | None = None  # give up after this many failed tries in a row; None: never

    def delays(self) -> Iterator[float]:
        delay = self.first_delay
        while True:
            yield delay
            delay = min(delay * 2, self.max_delay)


# What a worker hands to the delivering thread
@dataclass
class Frame:
    t: float
    image: Callable[[], np.ndarray]  # converts to RGB only when called (the sink may not want it)


@dataclass
class Audio:
    t: float
    samples: np.ndarray


@dataclass
class Notice:
    kind: str
    message: str


@dataclass
class End:
    reason: str


Item = Frame | Audio | Notice


class ConnectionFailed(Exception):
    """A connection could not be made or broke; the message is one line for the user."""


class NobodyYet(Exception):
    """A listening source's wait for a sender ran out with nobody connecting: not a failure, it
    listens again at once."""


class GiveUp(Exception):
    """A failure that trying again cannot mend (this FFmpeg has no such protocol): the source ends."""


# A connection: entered, it is an iterator of items, raising ConnectionFailed when it breaks and
# ending when its media ends; leaving it closes it.
Connect = Callable[[StreamClock, threading.Event], AbstractContextManager[Iterator[Item]]]


class LiveRunner:
    """Delivers what `connect` reads, reconnecting, until `stop` (see the module docstring)."""

    def __init__(
        self,
        name: str,
        connect: Connect,
        retry: Retry,
        again: str = "reconnecting",
        ended: str = "the stream ended",
    ) -> None:
        """The LOST notice says `ended` when the media ended without an error, then `again`: what
        the source does next."""
        self.name = name
        self.connect = connect
        self.retry = retry
        self.again = again
        self.ended = ended

    def run(self, clock: StreamClock, sink: Sink, stop: threading.Event) -> None:
        items: queue.Queue[Item | End] = queue.Queue(maxsize=QUEUE_ITEMS)
        worker = threading.Thread(
            target=self._work, args=(clock, stop, items), name=f"source {self.name}", daemon=True
        )
        worker.start()
        reason = "stopped"
        while not stop.is_set():
            try:
                item = items.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if isinstance(item, End):
                reason = item.reason
                break
            _deliver(self.name, item, sink)
        sink.notice(self.name, ENDED, reason)

    # ----------------------------------------------------------------------------------------------
    # The worker thread

    def _work(self, clock: StreamClock, stop: threading.Event, items: queue.Queue) -> None:
        try:
            self._reconnecting(clock, stop, lambda item: _put(items, item, stop))
        except Exception as exc:  # a bug must end the source, not leave the session waiting on it
            _put(items, End(f"failed: {type(exc).__name__}: {exc}"), stop)
            raise

    def _reconnecting(self, clock: StreamClock, stop: threading.Event, put: Callable) -> None:
        delays = self.retry.delays()
        failures = 0
        lost = False
        while not stop.is_set():
            session = _Session(lost)
            began = time.monotonic()
            try:
                why = self._read(clock, stop, session, put)
            except NobodyYet:
                if time.monotonic() - began < MIN_LISTEN_SECONDS:  # never spin on a wait that fails at once
                    stop.wait(MIN_LISTEN_SECONDS)
                continue
            except GiveUp as exc:
                put(End(str(exc)))
                return
            if stop.is_set():
                return
            if session.flowed:
                delays, failures = self.retry.delays(), 0
            failures += 1
            lost = lost and not session.flowed
            if not lost:
                put(Notice(LOST, f"{why}; {self.again}"))
                lost = True
            if self.retry.max_retries is not None and failures > self.retry.max_retries:
                tries = "try" if failures == 1 else "tries"
                put(End(f"gave up after {failures} failed {tries} ({why})"))
                return
            if not session.flowed:
                stop.wait(next(delays))

    def _read(self, clock: StreamClock, stop: threading.Event, session: _Session, put: Callable) -> str:
        """Connect once and pass on what flows; why it ended, in a few words."""
        try:
            with self.connect(clock, stop) as feed:
                for item in feed:
                    if not session.flowed and not isinstance(item, Notice):
                        session.flowed = True
                        if session.was_lost:
                            put(Notice(RECONNECTED, "media flows again"))
                    put(item)
                    if stop.is_set():
                        break
        except ConnectionFailed as exc:
            return str(exc)
        return self.ended


@dataclass
class _Session:
    was_lost: bool  # a LOST notice went out and no RECONNECTED yet
    flowed: bool = False  # media came through in this connection


def _put(items: queue.Queue, item: Item | End, stop: threading.Event) -> None:
    """Queue `item`, waiting while the sink is behind, unless `stop` comes first."""
    while not stop.is_set():
        try:
            items.put(item, timeout=POLL_SECONDS)
            return
        except queue.Full:
            continue


def _deliver(name: str, item: Item, sink: Sink) -> None:
    if isinstance(item, Frame):
        if sink.want_frame(item.t):
            sink.frame(item.t, item.image())
    elif isinstance(item, Audio):
        sink.audio(item.t, item.samples)
    else:
        sink.notice(name, item.kind, item.message)
