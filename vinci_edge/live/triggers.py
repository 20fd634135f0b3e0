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

Triggers never call the session from its own event or audio callbacks (those must return at once):
each has a worker thread that submits.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TextIO

import numpy as np

from vinci_edge.live.packets import stamp
from vinci_edge.live.vad import SpeechDetector, SpeechSegment

QuestionFor = Callable[[SpeechSegment], "str | None"]


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


class _Worker:
    """One thread that runs the calls put to it, in order; `close()` runs what is queued first."""

    def __init__(self, name: str) -> None:
        self._calls: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, call: Callable[[], None]) -> None:
        self._calls.put(call)

    def drain(self) -> None:
        """Wait until every call put so far has run."""
        done = threading.Event()
        self._calls.put(done.set)
        done.wait()

    def close(self) -> None:
        self._calls.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            call()


# ---- periodic ---------------------------------------------------------------------------------------
class PeriodicTrigger:
    """Asks `question` at stream times every_s, 2*every_s, ... (see the module docstring).

    `asked` and `skipped` count the due times: asked + skipped == the due times the stream passed.
    `futures` holds every question asked, in order.
    """

    def __init__(self, session: TriggerSession, every_s: float, question: str, gen: Any = None) -> None:
        if not every_s > 0:
            raise ValueError(f"every_s must be > 0, got {every_s}")
        self.every_s = every_s
        self.question = question
        self.gen = gen
        self.asked = 0
        self.skipped = 0
        self.futures: list[Future] = []
        self._session = session
        self._due = 1  # the next due time is stamp(_due * every_s)
        self._worker = _Worker("periodic-trigger")
        self._unsubscribe = session.subscribe(self._on_event)

    def due_times(self, until: float) -> int:
        """How many due times a stream that reached `until` passes."""
        return int(until / self.every_s + 1e-9)

    def close(self) -> None:
        """Stop asking; questions already asked still get their answers."""
        self._unsubscribe()
        self._worker.close()

    def _on_event(self, event: dict) -> None:
        if event.get("type") == "segment":
            t1 = float(event["t1"])
            self._worker.put(lambda: self._reached(t1))

    def _reached(self, t1: float) -> None:
        """Media up to `t1` is in the cache: ask once for every due time passed, or skip."""
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
        self.futures.append(self._session.submit(self.question, gen=self.gen, origin="periodic"))


# ---- speech -----------------------------------------------------------------------------------------
class SpeechTrigger:
    """Asks `question_for(segment)` (None: ask nothing) whenever a speech segment ends.

    Audio reaches the detector through the session's audio tap and a worker thread; `finish()`
    (call it once the sources ended) runs what is queued and closes speech still open at the end.
    `lookback_s` caps how far back the segment handed to `question_for` starts (a long monologue is
    asked about as its last `lookback_s` seconds); `on_asked(segment, future)` is called for each
    question asked; `segments` and `futures` hold what happened.
    """

    def __init__(
        self,
        session: TriggerSession,
        vad: SpeechDetector,
        question_for: QuestionFor,
        lookback_s: float | None = None,
        gen: Any = None,
        on_asked: Callable[[SpeechSegment, Future], None] | None = None,
    ) -> None:
        self.vad = vad
        self.question_for = question_for
        self.lookback_s = lookback_s
        self.gen = gen
        self.on_asked = on_asked
        self.segments: list[SpeechSegment] = []
        self.futures: list[Future] = []
        self._session = session
        self._worker = _Worker("speech-trigger")
        self._finished = False
        session.add_audio_tap(self._on_audio)

    def finish(self) -> None:
        """The audio ended: detect in what is queued, close open speech, stop the worker."""
        if self._finished:
            return
        self._finished = True
        self._worker.put(lambda: self._ended(self.vad.finish()))
        self._worker.close()

    def _on_audio(self, t: float, samples: np.ndarray) -> None:
        if not self._finished:
            block = np.array(samples, dtype=np.float32, copy=True)
            self._worker.put(lambda: self._ended(self.vad.feed(t, block)))

    def _ended(self, segments: list[SpeechSegment]) -> None:
        for segment in segments:
            self.segments.append(segment)
            self._session.publish({"type": "speech", "t": segment.t1, "t0": segment.t0, "t1": segment.t1})
            asked = self._asked_about(segment)
            question = self.question_for(asked)
            if question:
                future = self._session.submit(question, gen=self.gen, until=segment.t1, origin="speech")
                self.futures.append(future)
                if self.on_asked is not None:
                    self.on_asked(segment, future)

    def _asked_about(self, segment: SpeechSegment) -> SpeechSegment:
        if self.lookback_s is None or segment.seconds <= self.lookback_s:
            return segment
        return SpeechSegment(stamp(segment.t1 - self.lookback_s), segment.t1)


# ---- stdin ------------------------------------------------------------------------------------------
class StdinQuestions:
    """Reads questions from `stdin`, one a line, and prints each answer as it streams:

        [  12.48 s] Is the door open?
        [  12.91 s] > Yes, the door on the left is open.

    The first time is when the question was read, the second when its first words came, both on
    the stream clock. The reader stops at end of input or `close()`; answers still print after it.
    """

    def __init__(
        self,
        session: Any,
        stdin: TextIO | None = None,
        out: TextIO | None = None,
        gen: Any = None,
        origin: str = "cli",
    ) -> None:
        self.futures: list[Future] = []
        self._session = session
        self._stdin = stdin if stdin is not None else sys.stdin
        self._out = out if out is not None else sys.stdout
        self._gen = gen
        self._origin = origin
        self._print_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="stdin-questions", daemon=True)
        self._thread.start()

    def close(self) -> None:
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
        with self._print_lock:
            self._out.write(text)
            self._out.flush()
