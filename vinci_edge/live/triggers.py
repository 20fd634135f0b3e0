"""What starts a question in a live session: a period of stream time, the end of speech, a line typed.

- `PeriodicTrigger` asks every `every_s` seconds of *stream* time. It is driven by the session's
  "segment" events (a chunk of media entered the KV cache), not by a wall-clock timer, so a file
  played as fast as the runtime takes it asks at the same stream times as a camera. A question that
  falls due while the previous periodic one is still unanswered is skipped and counted: a slow
  model answers less often, it never builds a backlog.
- `SpeechTrigger` runs the session's audio through a `SpeechDetector`; when speech ends it publishes
  {"type": "speech", "t", "t0", "t1"} and asks `question_for(segment)` with `until=t1`, so the answer
  waits until the audio up to the end of the speech is in the cache.
- `StdinQuestions` asks each non-empty line read from stdin (the CLI's on-demand questions) and
  prints the answer as it streams, with its stream time.

The triggers submit from the session's own callbacks: `submit` only queues, so they return at
once. That is also what makes a file played fast deterministic: the "segment" event comes from the
session's worker, which answers a queued question before it closes the next segment, and the speech
detector runs on the audio tap, before the block that ends the speech is even queued.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TextIO

import numpy as np

from vinci_edge.live.packets import stamp
from vinci_edge.live.vad import SAMPLE_RATE as VAD_RATE
from vinci_edge.live.vad import SileroVAD, SpeechDetector, SpeechSegment

QuestionFor = Callable[[float, float], "str | None"]  # (t0, t1) of the speech -> the question


class TriggerSession(Protocol):
    """What the triggers use of a `LiveSession`."""

    def submit(
        self,
        question: str,
        gen: Any = None,
        until: float | None = None,
        on_text: Callable[[str], None] | None = None,
        origin: str = "api",
    ) -> Future: ...

    def subscribe(self, fn: Callable[[dict], None]) -> Callable[[], None]: ...

    def publish(self, event: dict) -> None: ...

    def add_audio_tap(self, fn: Callable[[float, np.ndarray], None]) -> Any: ...


# ---- periodic ---------------------------------------------------------------------------------------
class PeriodicTrigger:
    """Asks `question` at stream times every_s, 2*every_s, ... (see the module docstring).

    `asked` and `skipped` count the due times: asked + skipped == the due times the stream passed.
    `futures` holds every question asked, in order; `on_asked(future)` is called for each (e.g. an
    alert log's `watch`).
    """

    def __init__(
        self,
        session: TriggerSession,
        every_s: float,
        question: str,
        gen: Any = None,
        on_asked: Callable[[Future], None] | None = None,
    ) -> None:
        if not every_s > 0:
            raise ValueError(f"every_s must be > 0, got {every_s}")
        self.every_s = every_s
        self.question = question
        self.gen = gen
        self.on_asked = on_asked
        self.asked = 0
        self.skipped = 0
        self.futures: list[Future] = []
        self._session = session
        self._due = 1  # index of the next due time, _due * every_s
        self._lock = threading.Lock()
        self._unsubscribe = session.subscribe(self._on_event)

    def due_times(self, until: float) -> int:
        """How many due times a stream that reached `until` passes."""
        return int(until / self.every_s + 1e-9)

    def stop(self) -> None:
        """Stop asking; questions already asked still get their answers."""
        self._unsubscribe()

    def _on_event(self, event: dict) -> None:
        if event.get("type") == "segment":
            with self._lock:
                self._reached(float(event["t1"]))

    def _reached(self, t1: float) -> None:
        """Media up to `t1` is in the cache: one question for the due times passed, or a skip."""
        passed = self.due_times(t1) - self._due + 1
        if passed <= 0:
            return
        self._due += passed
        previous = self.futures[-1] if self.futures else None
        if previous is not None and not previous.done():
            self.skipped += passed
            return
        self.skipped += passed - 1  # one question for media that passed several due times at once
        self.asked += 1
        future = self._session.submit(self.question, gen=self.gen, origin="periodic")
        self.futures.append(future)
        if self.on_asked is not None:
            self.on_asked(future)


# ---- speech -----------------------------------------------------------------------------------------
class SpeechTrigger:
    """Asks `question_for(t0, t1)` (None or "": ask nothing) whenever a stretch of speech ends.

    `vad` is a `SpeechDetector`, or a `SileroVAD` model (detected with the default settings). The
    detector runs on the session's audio tap (about 0.1 ms of CPU per 32 ms of audio). `finish()`,
    called once the sources have ended and before the session stops, closes speech still open at
    the end of the stream and asks about it; `stop()` just stops listening. `lookback_s` caps how
    far back the (t0, t1) handed to `question_for` reaches (a long monologue is asked about as its
    last `lookback_s` seconds); `on_asked(segment, future)` is called for each question asked;
    `segments` and `futures` hold what happened.
    """

    def __init__(
        self,
        session: TriggerSession,
        vad: SpeechDetector | SileroVAD,
        question_for: QuestionFor,
        lookback_s: float | None = None,
        gen: Any = None,
        on_asked: Callable[[SpeechSegment, Future], None] | None = None,
    ) -> None:
        rate = getattr(getattr(session, "cfg", None), "audio_sampling_rate", VAD_RATE)
        if rate != VAD_RATE:
            raise ValueError(f"the VAD takes {VAD_RATE} Hz audio; this session delivers {rate} Hz")
        self.vad = vad if isinstance(vad, SpeechDetector) else SpeechDetector(vad)
        self.question_for = question_for
        self.lookback_s = lookback_s
        self.gen = gen
        self.on_asked = on_asked
        self.segments: list[SpeechSegment] = []
        self.futures: list[Future] = []
        self._session = session
        self._lock = threading.Lock()  # the tap's thread and finish() share the detector
        self._finished = False
        session.add_audio_tap(self._on_audio)

    def finish(self) -> None:
        """The audio ended: ask about speech still open, then stop listening."""
        with self._lock:
            if not self._finished:
                self._finished = True
                self._ended(self.vad.finish())

    def stop(self) -> None:
        """Stop listening; speech still open is not asked about."""
        with self._lock:
            self._finished = True

    def _on_audio(self, t: float, samples: np.ndarray) -> None:
        with self._lock:
            if not self._finished:
                self._ended(self.vad.feed(t, samples))

    def _ended(self, segments: list[SpeechSegment]) -> None:
        for segment in segments:
            self.segments.append(segment)
            self._session.publish({"type": "speech", "t": segment.t1, "t0": segment.t0, "t1": segment.t1})
            t0, t1 = self._asked_about(segment)
            question = self.question_for(t0, t1)
            if question:
                future = self._session.submit(question, gen=self.gen, until=segment.t1, origin="speech")
                self.futures.append(future)
                if self.on_asked is not None:
                    self.on_asked(segment, future)

    def _asked_about(self, segment: SpeechSegment) -> tuple[float, float]:
        if self.lookback_s is None or segment.seconds <= self.lookback_s:
            return segment.t0, segment.t1
        return stamp(segment.t1 - self.lookback_s), segment.t1


# ---- stdin ------------------------------------------------------------------------------------------
class StdinQuestions:
    """Reads questions from `stdin`, one a line (origin "cli"). With `out`, it prints each question
    and its answer as it streams:

        [   12.48 s] Is the door open?
        [   12.91 s] > Yes, the door on the left is open.

    The first time is when the question was read, the second when its first words came, both on
    the stream clock. Without `out` nothing is printed: a program that prints every session event
    (the live command's printer) shows them already. `on_asked(future)` is called for each question
    (e.g. an alert log's `watch`). The reader stops at end of input or `stop()`; answers to questions
    already asked still come.
    """

    def __init__(
        self,
        session: Any,
        stdin: TextIO | None = None,
        out: TextIO | None = None,
        gen: Any = None,
        origin: str = "cli",
        on_asked: Callable[[Future], None] | None = None,
    ) -> None:
        self.futures: list[Future] = []
        self.on_asked = on_asked
        self._session = session
        self._stdin = stdin if stdin is not None else sys.stdin
        self._out = out
        self._gen = gen
        self._origin = origin
        self._print_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="stdin-questions", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reading (a line being typed is not asked)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the end of input; True when the reader finished."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _read(self) -> None:
        for line in self._stdin:
            if self._stop.is_set():
                return
            if line.strip():
                self._ask(line.strip())

    def _ask(self, question: str) -> None:
        self._print(f"[{self._now():8.2f} s] {question}\n")
        started = threading.Event()

        def on_text(piece: str) -> None:
            if not started.is_set():
                started.set()
                piece = f"[{self._now():8.2f} s] > {piece}"
            self._print(piece)

        future = self._session.submit(question, gen=self._gen, on_text=on_text, origin=self._origin)
        future.add_done_callback(lambda f: self._done(f, started))
        self.futures.append(future)
        if self.on_asked is not None:
            self.on_asked(future)

    def _done(self, future: Future, started: threading.Event) -> None:
        error = future.exception()
        if error is not None:
            self._print(
                f"\n[{self._now():8.2f} s] refused: {error}\n"
                if started.is_set()
                else f"  refused: {error}\n"
            )
        else:
            self._print("\n" if started.is_set() else f"[{self._now():8.2f} s] > {future.result().text}\n")

    def _now(self) -> float:
        return self._session.clock.now()

    def _print(self, text: str) -> None:
        if self._out is None:
            return
        with self._print_lock:
            self._out.write(text)
            self._out.flush()
