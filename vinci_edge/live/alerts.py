"""Alerts: answers that match a rule become "alert" events, a JSON line and a saved frame.

    rules = [parse_rule("danger=\\byes\\b|unsafe|fire")]        # what --alert NAME=REGEX parses to
    with AlertLog(session, rules, Path("events.jsonl"), Path("frames")) as log:
        ...                                                     # the session runs and answers

`AlertLog` listens to the session's "answer" events. Every answer is appended to the events file as
a JSON line ({"type": "answer", ...}); an answer that matches a rule (case-insensitive regex search;
a plain keyword is a regex too) is published as {"type": "alert", "t", "rule", "match", "qid",
"question", "answer", "frame_t", "frame"} and appended as well, and its frame is saved as a JPEG
named by its stream time and question id: for a question passed to `watch(future)` (the triggers'
`on_asked`), exactly the frame the model saw (`LiveAnswer.frame`); for any other, the newest frame
the session had sampled when the answer came. The files are written by a worker thread
(the session's event callbacks must return at once) and flushed line by line, so a run that is
killed keeps every line it wrote. An events file that exists is appended to, never truncated; both
outputs are checked writable before the session starts (`check_outputs`).
"""

from __future__ import annotations

import argparse
import json
import queue
import re
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np
from PIL import Image

from vinci_edge.output_folder import OutputFolderError
from vinci_edge.progress import to_stderr

JPEG_QUALITY = 90
FRAME_WAIT_S = 5.0  # the most a watched answer's event waits for its future (resolved right after it)
Frame = tuple[float, np.ndarray]  # (stream time, RGB uint8 HxWx3)
_RULE_NAME = re.compile(r"[\w.-]+")


class EventSession(Protocol):
    """What the alert log uses of a `LiveSession`."""

    def subscribe(self, fn: Callable[[dict], None]) -> Callable[[], None]: ...

    def publish(self, event: dict) -> None: ...

    def latest_frame(self) -> Frame | None: ...


# ---- rules ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AlertRule:
    """An alert named `name` for answers in which `pattern` (a regex, case-insensitive) is found.

    A bad regex, an empty one, or one that matches an empty answer (it would fire on every answer)
    raises ValueError with one line."""

    name: str
    pattern: str
    regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _RULE_NAME.fullmatch(self.name):
            raise ValueError(f"alert name {self.name!r} is not a word (letters, digits, _ . -)")
        if not self.pattern.strip():
            raise ValueError(f"alert {self.name}: the pattern is empty")
        try:
            compiled = re.compile(self.pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(
                f"alert {self.name}: {self.pattern!r} is not a regex ({_regex_error(exc)})"
            ) from None
        if compiled.search(""):
            raise ValueError(f"alert {self.name}: {self.pattern!r} matches an empty answer, so every answer")
        object.__setattr__(self, "regex", compiled)

    def search(self, text: str) -> str | None:
        """The first piece of `text` the rule matches, None when it does not."""
        found = self.regex.search(text)
        return found.group(0) if found else None


def parse_rule(text: str) -> AlertRule:
    """NAME=REGEX, or a bare KEYWORD (its own name); ValueError with one line when it is not one."""
    name, sep, pattern = text.partition("=")
    if not sep:
        name = pattern = text.strip()
    try:
        return AlertRule(name.strip(), pattern)
    except ValueError as exc:
        raise ValueError(f"{exc} (expected NAME=REGEX, e.g. fire=smoke|flame)") from None


def alert_rule(text: str) -> AlertRule:
    """`type=` for --alert: `parse_rule`, refused as argparse refuses (it prefixes the option, and
    `CommandLineParser` makes it a `UsageError`)."""
    try:
        return parse_rule(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _regex_error(exc: re.error) -> str:
    return f"{exc.msg} at position {exc.pos}" if exc.pos is not None else exc.msg


# ---- outputs ----------------------------------------------------------------------------------------
def check_outputs(events_path: Path | None, frames_dir: Path | None) -> None:
    """Refuse, before anything runs, an events file or frames folder that cannot be written (a
    folder given as the file, a file given as the folder, a read-only place). Creates nothing."""
    if events_path is not None:
        if events_path.is_dir():
            raise OutputFolderError(f"the event log {events_path} is a folder", hint="give a file name")
        if events_path.exists():
            _check_appendable(events_path)
        else:
            _check_can_create(events_path.parent, f"the event log {events_path}")
    if frames_dir is not None:
        if frames_dir.exists() and not frames_dir.is_dir():
            raise OutputFolderError(f"the frames folder {frames_dir} is a file", hint="give a folder")
        _check_can_create(frames_dir, f"the frames folder {frames_dir}")


def _check_appendable(path: Path) -> None:
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise OutputFolderError(
            f"cannot append to the event log {path}: {exc.strerror}", hint="give a file this user can write"
        ) from None


def _check_can_create(path: Path, what: str) -> None:
    """`path` (or the folders above it that exist) can be made and written by this user."""
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputFolderError(f"cannot make {what}: {existing} is a file", hint="choose another place")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OutputFolderError(
            f"cannot write {what}: {existing}: {exc.strerror}", hint="choose a place this user can write to"
        ) from None


def frame_file_name(frame_t: float, qid: int) -> str:
    """A frame's JPEG name: its stream time (zero-padded, so names sort by time) and question id."""
    return f"t{frame_t:010.3f}-q{qid}.jpg"


# ---- the log ----------------------------------------------------------------------------------------
class AlertLog:
    """Matches every answer of `session` against `rules`; publishes and logs the alerts (see the
    module docstring). Use it as a context manager, or call `stop()`, so every line is written."""

    def __init__(
        self,
        session: EventSession,
        rules: Iterable[AlertRule],
        events_path: Path | None = None,
        frames_dir: Path | None = None,
    ) -> None:
        check_outputs(events_path, frames_dir)
        self.rules = list(rules)
        self.answers = 0
        self.alerts = 0
        self.frames_saved = 0
        self._session = session
        self._frames_dir = frames_dir
        self._events = _open_append(events_path) if events_path is not None else None
        self._failed: str | None = None
        self._watched: dict[int, Future] = {}  # qid -> the future of a watched question
        self._queue: queue.Queue[tuple[dict, Frame | None] | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="alert-log", daemon=True)
        self._worker.start()
        self._unsubscribe = session.subscribe(self._on_event)

    def stop(self) -> None:
        """Stop listening, write what is queued, close the file."""
        self._unsubscribe()
        self._queue.put(None)
        self._worker.join()
        if self._events is not None:
            self._events.close()

    def __enter__(self) -> AlertLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def watch(self, future: Future) -> None:
        """Save the frame of `future`'s answer exactly: its `LiveAnswer.frame`, the newest frame in
        the cache when it was answered. (Answers not watched get the newest frame sampled when they
        came, which a file played fast can have read well past.) The session's futures carry their
        question id, which the answer event names."""
        qid = getattr(future, "qid", None)
        if qid is not None:
            self._watched[qid] = future

    def _on_event(self, event: dict) -> None:
        """On the session's thread: note the newest frame now and hand the answer to the worker."""
        if event.get("type") == "answer":
            self._queue.put((event, self._session.latest_frame()))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            event, latest = item
            try:
                self._handle(event, self._answer_frame(event, latest))
            except Exception as exc:  # a full disk must not end the session: say it once
                self._fail(f"{type(exc).__name__}: {exc}")

    def _answer_frame(self, event: dict, latest: Frame | None) -> Frame | None:
        """A watched answer's own frame (the session resolves its future just after publishing the
        answer), else the newest frame sampled when the answer came."""
        future = self._watched.pop(event.get("qid"), None)
        if future is None:
            return latest
        try:
            return future.result(timeout=FRAME_WAIT_S).frame
        except Exception:  # refused after all, or not resolved in time: the newest frame will do
            return latest

    def _handle(self, event: dict, frame: Frame | None) -> None:
        self.answers += 1
        self._write({**event, "type": "answer"})
        text = str(event.get("text", ""))
        hits = [(rule, found) for rule in self.rules if (found := rule.search(text)) is not None]
        if not hits:
            return
        frame_t, saved = self._save_frame(event, frame)
        for rule, found in hits:
            alert = {
                "type": "alert",
                "t": event.get("t"),
                "rule": rule.name,
                "match": found,
                "qid": event.get("qid"),
                "question": event.get("question"),
                "answer": text,
                "frame_t": frame_t,
                "frame": saved,
            }
            self.alerts += 1
            self._session.publish(alert)
            self._write(alert)

    def _save_frame(self, event: dict, frame: Frame | None) -> tuple[float | None, str | None]:
        """The frame's stream time and where its JPEG was saved (None: no folder or no frame)."""
        if frame is None:
            return event.get("frame_t"), None
        frame_t, rgb = frame
        if self._frames_dir is None:
            return frame_t, None
        self._frames_dir.mkdir(parents=True, exist_ok=True)
        path = self._frames_dir / frame_file_name(frame_t, int(event.get("qid", 0)))
        Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(path, "JPEG", quality=JPEG_QUALITY)
        self.frames_saved += 1
        return frame_t, str(path)

    def _write(self, record: dict[str, Any]) -> None:
        if self._events is not None:
            self._events.write(json.dumps(record, ensure_ascii=False, default=_plain) + "\n")
            self._events.flush()

    def _fail(self, why: str) -> None:
        if self._failed is None:
            self._failed = why
            to_stderr(f"alert log: {why} (alerts are still published)")


def _open_append(path: Path) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return path.open("a", encoding="utf-8")
    except OSError as exc:
        raise OutputFolderError(
            f"cannot open the event log {path}: {exc.strerror}", hint="give a file this user can write"
        ) from None


def _plain(value: object) -> object:
    """numpy scalars and arrays as JSON numbers and lists; anything else as its text."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return str(value)
