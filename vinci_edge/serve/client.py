"""A live session on a server: local sources streamed to `vinci-edge serve`, answers streamed back.

    from vinci_edge.serve.client import RemoteSession
    from vinci_edge.live.sources import open_source

    session = RemoteSession("gpu-host:8001", camera="dock-3")
    session.start([open_source("/dev/video0"), open_source("mic")])
    print(session.ask("Is anyone in danger?").text)
    session.stop()                                    # sends `end`: the server frees the camera

`RemoteSession` has the surface of `vinci_edge.live.session.LiveSession` that the demos, the
triggers and the alert log use (start / submit / ask / subscribe / publish / add_audio_tap /
latest_frame / stats / join / stop, `clock`, `media_until`), so each of them runs unchanged against
a server. What runs where:

    here:   sources (their own threads) -> the same bounded inbox a local session reads
            (frames sampled at `fps`; a real-time source drops what does not fit, a file played fast
            waits) -> the sender thread: one `media` request per frame or audio block, in stream
            order, stamped by this session's own stream clock
            a question -> the `ask` model over a gRPC stream -> "text" events, then "answer"
            (or "refused", with the reason)
            the voice-activity detector and the alert log (they read local audio and frames)
    server: the camera's LiveSession: vision / audio encoders (batched across cameras), the KV cache

A server that goes away is a "source" event (`lost`, then `reconnected`), never a traceback: the
sender tries again with a back-off that doubles up to `Retry.max_delay`, a real-time source keeps
dropping (and counting) what does not fit meanwhile, and on reconnecting the camera is started
again (a server that restarted has forgotten it). Questions asked while the server is away are
refused with the reason.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vinci_edge.errors import PromptError
from vinci_edge.kinds import Kind
from vinci_edge.live import packets
from vinci_edge.live.answers import QuestionRefused
from vinci_edge.live.events import Publishing
from vinci_edge.live.inbox import Inbox, SourceSink
from vinci_edge.live.packets import Source, StreamClock
from vinci_edge.live.sources.live import Retry
from vinci_edge.serve.client_transport import ServerLink, ServerUnavailable

__all__ = ["QuestionRefused", "RemoteAnswer", "RemoteOptions", "RemoteSession", "ServerUnavailable"]

SAMPLE_RATE = 16000  # the protocol's audio: mono float32 at 16 kHz


@dataclass(frozen=True)
class RemoteOptions:
    fps: float = 1.0  # frames sent per second of stream (the server samples at its own --fps too)
    max_queued_frames: int = 8  # frames waiting to be sent; a real-time source drops beyond it
    max_queued_audio_seconds: float = 10.0
    max_queued_questions: int = 8  # questions waiting for an answer here; more are refused
    max_new_tokens: int = 64  # default answer length
    retry: Retry = field(default_factory=lambda: Retry(first_delay=0.5, max_delay=8.0))
    poll_seconds: float = 0.5  # how often the server's stats are read (media_until, "segment" events)
    # A file played fast is sent at most this many seconds of stream ahead of what the server has in
    # its cache: the server's queues are real-time (they drop), so a file waits for the server
    # instead, loses nothing, and gives the server the same chunks every time. Real-time sources
    # never wait. None: no limit.
    max_ahead_seconds: float | None = 4.0
    keep_frames: int = 64  # frames sent that are kept here, so an answer can name the frame it saw

    def __post_init__(self) -> None:
        checks = [
            (self.fps > 0, "fps must be above 0"),
            (self.max_queued_frames >= 1, "max_queued_frames must be at least 1"),
            (self.max_queued_audio_seconds > 0, "max_queued_audio_seconds must be above 0"),
            (self.max_queued_questions >= 1, "max_queued_questions must be at least 1"),
            (self.max_new_tokens >= 1, "max_new_tokens must be at least 1"),
            (self.poll_seconds > 0, "poll_seconds must be above 0"),
            (
                self.max_ahead_seconds is None or self.max_ahead_seconds > 0,
                "max_ahead_seconds must be above 0",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class RemoteAnswer:
    """What `LiveAnswer` gives, for an answer that came from a server (`server` holds its JSON)."""

    qid: int
    question: str
    origin: str
    asked_at: float  # this session's stream time when the question was submitted
    media_until: float  # stream time up to which the server had media in its cache
    text: str
    token_ids: list[int]
    ttft_s: float  # from submit to the first piece of text, measured here (network included)
    total_s: float
    stop_reason: str | None = None
    frame: tuple[float, np.ndarray] | None = None  # the frame sent here that the server's answer names
    server: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "qid": self.qid,
            "question": self.question,
            "origin": self.origin,
            "asked_at": self.asked_at,
            "media_until": self.media_until,
            "text": self.text,
            "token_ids": self.token_ids,
            "ttft_s": self.ttft_s,
            "total_s": self.total_s,
            "frame_t": self.frame[0] if self.frame else self.server.get("frame_t"),
            "stop_reason": self.stop_reason,
            "server_ttft_s": self.server.get("ttft_s"),
            "timings": self.server.get("timings"),
        }


@dataclass
class _Question:
    qid: int
    question: str
    max_new_tokens: int
    until: float | None
    on_text: Callable[[str], None] | None
    origin: str
    asked_at: float
    submitted: float = field(default_factory=time.perf_counter)
    future: Future = field(default_factory=Future)


class _Config:
    """What the triggers read of a session's model config (the VAD checks the audio rate)."""

    audio_sampling_rate = SAMPLE_RATE


class RemoteSession(Publishing):
    """See the module docstring. `url` is the server's gRPC address (HOST:PORT); `camera` names
    this stream on the server (its correlation id: one session per camera)."""

    def __init__(self, url: str, camera: str, options: RemoteOptions | None = None) -> None:
        if not camera.strip():
            raise PromptError("the camera id is empty", hint="give --camera a name, e.g. dock-3")
        self.url = url
        self.camera = camera
        self.opts = options or RemoteOptions()
        self.cfg = _Config()
        self.clock = StreamClock()
        self.link = ServerLink(url, camera)
        self._cond = threading.Condition()
        self._stopping = threading.Event()  # sources stop
        self._closed = threading.Event()  # the sender sends `end` and quits
        self.inbox = Inbox(
            self._cond,
            self.opts.fps,
            SAMPLE_RATE,
            self.opts.max_queued_frames,
            self.opts.max_queued_audio_seconds,
            self._stopping,
            self._notify_source,
        )
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._threads: list[threading.Thread] = []
        self._sender: threading.Thread | None = None
        self._poller: threading.Thread | None = None
        self._qids = itertools.count(1)
        self._waiting: set[int] = set()  # questions not answered yet
        self._sent_frames: dict[float, np.ndarray] = {}
        self._up = False  # the link works (the camera is started on the server)
        self._paced = False  # a file played fast: sent no further ahead of the server than max_ahead
        self._ended_sent = False
        self._in_flight = 0  # a packet popped from the inbox and not yet acknowledged
        self.media_until = 0.0
        self.sent_until = 0.0  # where the media the server acknowledged end (stream time)
        self.server_stats: dict[str, Any] = {}
        self.counters = dict.fromkeys(
            (
                "frames_sent",
                "audio_blocks_sent",
                "frames_refused",
                "reconnects",
                "questions",
                "answers",
                "refused",
            ),
            0,
        )

    # ---- starting and stopping -----------------------------------------------------------------
    def start(self, sources: Sequence[Source]) -> None:
        """Start reading `sources` (at most one video and one audio source) and sending them."""
        if self._sender is not None:
            raise RuntimeError("the session is already started")
        streams = self.inbox.streams
        for source in sources:
            for kind, has in ((Kind.VIDEO, source.video), (Kind.AUDIO, source.audio)):
                if has and kind in streams:
                    raise PromptError(
                        f"both {streams[kind]} and {source.name} deliver {kind.label}",
                        hint="give one video source and at most one audio source",
                    )
                if has:
                    streams[kind] = source.name
        self._paced = self.opts.max_ahead_seconds is not None and not any(s.realtime for s in sources)
        self._connect_first()
        self._sender = threading.Thread(target=self._send_loop, name="serve-sender", daemon=True)
        self._sender.start()
        self._poller = threading.Thread(target=self._poll_loop, name="serve-stats", daemon=True)
        self._poller.start()
        for source in sources:
            t = threading.Thread(target=self._read, args=(source,), name=f"serve-{source.name}", daemon=True)
            self._threads.append(t)
            t.start()

    def _connect_first(self) -> None:
        """The first connection: a server that is not there yet is a notice and a retry, not an
        error (the sender keeps trying); one that refuses the camera is an error."""
        try:
            self._open_camera()
        except ServerUnavailable as exc:
            self._lost(str(exc))

    def _read(self, source: Source) -> None:
        sink = SourceSink(self.inbox, source)
        try:
            source.run(self.clock, sink, self._stopping)
        except Exception as exc:  # a source must not take the session down: it is a notice
            sink.notice(source.name, packets.NOTICE, f"stopped by an error: {exc}")
        finally:
            sink.notice(source.name, packets.ENDED, "ended")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the sources, send what is queued, wait for the questions asked (up to `timeout`),
        then send `end` (the server frees the camera) and close the connection."""
        self._stopping.set()
        for t in self._threads:
            t.join(timeout)
        deadline = time.monotonic() + timeout
        self._wait(lambda: not self._waiting and (self._flushed() or not self._up), timeout)
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
        if self._sender is not None:
            self._sender.join(max(0.0, deadline - time.monotonic()) + 1.0)
        if self._poller is not None:
            self._poller.join(2.0)
        self.link.close()

    def __enter__(self) -> RemoteSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every source has ended, all its media is sent and the server has it in the
        cache (its media_until reached the last media sent)."""
        return self._wait(lambda: self._flushed() and self.media_until >= self.sent_until, timeout)

    def wait_until(self, t: float, timeout: float | None = None) -> bool:
        """Wait until the server has media up to stream time `t` in its cache (or all is sent and in)."""
        return self._wait(
            lambda: self.media_until >= t or (self._flushed() and self.media_until >= self.sent_until),
            timeout,
        )

    def _flushed(self) -> bool:
        """Every source ended and all its media acknowledged by the server."""
        box = self.inbox
        return box.sources_done() and not box.pending() and not self._in_flight

    def _wait(self, done: Callable[[], bool], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not done():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.1 if left is None else min(left, 0.1))
        return True

    # ---- the server link -------------------------------------------------------------------------
    def _open_camera(self) -> None:
        """Connect and start the camera on the server. A refusal (stream limit, bad id) is an
        error for the caller: it will not change by trying again."""
        self.link.connect()
        status = self.link.media("start", self.clock.now())
        if not status.get("ok", False) and not _already_started(status):
            self.link.close()
            raise PromptError(
                f"the server at {self.link.url} refused camera {self.camera!r}: {status.get('reason')}",
                hint="see `vinci-edge serve --max-streams`, or use another --camera id",
            )
        with self._cond:
            self._up = True
            self._cond.notify_all()
        self._note_status(status)

    def _lost(self, why: str) -> None:
        with self._cond:
            was_up, self._up = self._up, False
        if was_up or not self.counters["reconnects"]:
            self._notify_source(self._server_name(), packets.LOST, why)

    def _reconnect(self) -> bool:
        """Try again with back-off until connected (True) or the session closes (False)."""
        self.link.close()
        for delay in self.opts.retry.delays():
            if self._closed.wait(delay):  # stopped while the server is away: what is queued is lost
                return False
            try:
                self._open_camera()
            except ServerUnavailable:
                continue
            except PromptError as exc:  # the server came back but refuses the camera
                self._notify_source(self._server_name(), packets.NOTICE, exc.message)
                continue
            self.counters["reconnects"] += 1
            self._notify_source(self._server_name(), packets.RECONNECTED, f"connected to {self.link.url}")
            return True
        return False

    def _server_name(self) -> str:
        return f"server {self.link.url}"

    # ---- the sender -------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        """Send the inbox's packets in stream order; reconnect when the server goes away; at the
        end, send `end`."""
        packet = None
        while True:
            if not self._up and not self._reconnect():
                break
            if packet is None:
                packet = self._next_packet()
                if packet is None:
                    break
            try:
                self._send(packet)
                packet = None
            except ServerUnavailable as exc:
                self._lost(str(exc))  # the packet is sent again once reconnected
            except PromptError as exc:  # the server forgot the camera and will not take it back yet
                self._lost(exc.message)
            except Exception as exc:  # never a traceback from the sender: the packet is dropped
                self._unsent(packet, f"{type(exc).__name__}: {exc}")
                packet = None
        self._send_end()

    def _unsent(self, packet: tuple[Kind, float, np.ndarray], why: str) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()
        self.publish({"type": "error", "message": f"a {packet[0].label} packet was not sent: {why}"})

    def _next_packet(self) -> tuple[Kind, float, np.ndarray] | None:
        """The next packet to send, waiting for one; None once the session is closed and the inbox
        is empty."""
        with self._cond:
            while True:
                packet = self.inbox.pop()
                if packet is not None:
                    self._in_flight += 1
                    return packet
                if self._closed.is_set() and not self.inbox.pending():
                    return None
                self._cond.wait(0.05)

    def _send(self, packet: tuple[Kind, float, np.ndarray]) -> None:
        kind, t, data = packet
        if self._paced:
            self._wait_for_server(t)
        status = self._deliver(kind, t, data)
        if not status.get("ok", False) and _unknown_camera(status):  # the server forgot the camera
            self._open_camera()
            status = self._deliver(kind, t, data)
        with self._cond:
            self._in_flight -= 1
            name = "frames" if kind == Kind.VIDEO else "audio_blocks"
            if status.get("ok", False):
                self.counters[f"{name}_sent"] += 1
            elif kind == Kind.VIDEO:
                self.counters["frames_refused"] += 1
            end = t if kind == Kind.VIDEO else t + data.size / SAMPLE_RATE
            self.sent_until = max(self.sent_until, end)
            self._cond.notify_all()
        self._note_status(status)
        if not status.get("ok", False):
            self.publish(
                {
                    "type": "error",
                    "message": f"the server refused a {kind.label} packet: {status.get('reason')}",
                }
            )

    def _deliver(self, kind: Kind, t: float, data: np.ndarray) -> dict[str, Any]:
        if kind == Kind.VIDEO:
            self._keep_frame(t, data)
            return self.link.media("frame", t, frame=data)
        return self.link.media("audio", t, samples=data)

    def _wait_for_server(self, t: float) -> None:
        """Hold a packet of a file played fast until the server's cache reaches within
        `max_ahead_seconds` of it (its stats read every 50 ms meanwhile)."""
        ahead = float(self.opts.max_ahead_seconds or 0.0)
        while t > self.media_until + ahead and not self._closed.is_set():
            self._refresh_stats()
            if t > self.media_until + ahead:
                time.sleep(0.05)

    def _send_end(self) -> None:
        if self._ended_sent or not self._up:
            return
        self._ended_sent = True
        with contextlib.suppress(ServerUnavailable):
            self.link.media("end", self.clock.now())

    def _keep_frame(self, t: float, rgb: np.ndarray) -> None:
        with self._cond:
            self._sent_frames[t] = rgb
            while len(self._sent_frames) > self.opts.keep_frames:
                self._sent_frames.pop(next(iter(self._sent_frames)))

    # ---- the server's view: media_until and "segment" events -------------------------------------
    def _poll_loop(self) -> None:
        while not self._closed.wait(self.opts.poll_seconds):
            if self._up:
                with contextlib.suppress(ServerUnavailable):  # the sender reports a loss
                    self._refresh_stats()

    def _refresh_stats(self) -> None:
        stats = self.link.stats()
        with self._cond:
            self.server_stats = stats
        self._note_status(stats.get("streams", {}).get(self.camera, {}))

    def _note_status(self, status: dict[str, Any]) -> None:
        """A status or the camera's stats: publish a "segment" event when the server's media_until
        moved (the periodic trigger asks on those). Called without the lock: listeners may call
        back into the session."""
        until = status.get("media_until")
        with self._cond:
            if not isinstance(until, int | float):
                return
            # The server names a segment's end; its media end where this side's did (a real-time
            # session closes a segment late, past the last packet: the cache holds no more)
            until = min(float(until), self.sent_until)
            if until <= self.media_until:
                return
            t0, self.media_until = self.media_until, until
            self._cond.notify_all()
        self.publish({"type": "segment", "t0": t0, "t1": until, "remote": True})

    # ---- questions -------------------------------------------------------------------------------
    def submit(
        self,
        question: str,
        gen: Any = None,
        until: float | None = None,
        on_text: Callable[[str], None] | None = None,
        origin: str = "api",
    ) -> Future:
        """Ask the server; the future (with `.qid`) gives a `RemoteAnswer` or raises `QuestionRefused`.
        Only `gen.max_new_tokens` travels (the server samples as it was started)."""
        max_new = getattr(gen, "max_new_tokens", None) or self.opts.max_new_tokens
        q = _Question(next(self._qids), question, max_new, until, on_text, origin, self.clock.now())
        q.future.qid = q.qid  # type: ignore[attr-defined]  # callers match it with the events
        self.publish(
            {
                "type": "question",
                "t": q.asked_at,
                "qid": q.qid,
                "question": question,
                "origin": origin,
                "media_until": self.media_until,
            }
        )
        with self._cond:
            self.counters["questions"] += 1
            reason = None
            if not question.strip():
                reason = "the question is empty"
            elif self._sender is None or self._closed.is_set():
                reason = "the session is not running"
            elif not self._up:
                reason = f"the server at {self.link.url} is unavailable"
            elif len(self._waiting) >= self.opts.max_queued_questions:
                reason = f"{len(self._waiting)} questions are already waiting (max_queued_questions)"
            else:
                self._waiting.add(q.qid)
        if reason is not None:
            self._refuse(q, reason)
        else:
            threading.Thread(target=self._ask, args=(q,), name=f"serve-ask-{q.qid}", daemon=True).start()
        return q.future

    def ask(self, question: str, timeout: float | None = None, **kwargs: Any) -> RemoteAnswer:
        """`submit` and wait for the answer."""
        return self.submit(question, **kwargs).result(timeout)

    def _ask(self, q: _Question) -> None:
        pieces: list[str] = []
        first: float | None = None
        try:
            for piece, final in self.link.ask(q.question, q.max_new_tokens, q.until):
                if final is not None:
                    self._finish(q, pieces, first, final)
                    return
                first = first if first is not None else time.perf_counter()
                pieces.append(piece)
                self.publish({"type": "text", "qid": q.qid, "text": piece})
                if q.on_text is not None:
                    with contextlib.suppress(Exception):
                        q.on_text(piece)
            self._refuse(q, "the server ended the answer without its final response")
        except ServerUnavailable as exc:
            self._refuse(q, str(exc))
        except Exception as exc:  # never a traceback from a question: it is refused with the reason
            self._refuse(q, f"asking failed: {type(exc).__name__}: {exc}")
        finally:
            with self._cond:
                self._waiting.discard(q.qid)
                self._cond.notify_all()

    def _finish(self, q: _Question, pieces: list[str], first: float | None, final: dict[str, Any]) -> None:
        if "refused" in final:
            self._refuse(q, str(final["refused"]))
            return
        now = time.perf_counter()
        text = final.get("text", "".join(pieces))
        answer = RemoteAnswer(
            qid=q.qid,
            question=q.question,
            origin=q.origin,
            asked_at=q.asked_at,
            media_until=float(final.get("media_until", self.media_until)),
            text=text,
            token_ids=list(final.get("token_ids", [])),
            ttft_s=(first if first is not None else now) - q.submitted,
            total_s=now - q.submitted,
            stop_reason=final.get("stop_reason"),
            frame=self._frame_at(final.get("frame_t")),
            server=final,
        )
        with self._cond:
            self.counters["answers"] += 1
        self.publish({"type": "answer", **answer.to_json(), "tokens": len(answer.token_ids)})
        q.future.set_result(answer)

    def _frame_at(self, t: Any) -> tuple[float, np.ndarray] | None:
        if not isinstance(t, int | float):
            return None
        with self._cond:
            rgb = self._sent_frames.get(float(t))
        return None if rgb is None else (float(t), rgb)

    def _refuse(self, q: _Question, reason: str) -> None:
        with self._cond:
            self.counters["refused"] += 1
        self.publish({"type": "refused", "qid": q.qid, "question": q.question, "reason": reason})
        if not q.future.done():
            q.future.set_exception(QuestionRefused(reason))

    # ---- events and state ------------------------------------------------------------------------
    def add_audio_tap(self, fn: Callable[[float, np.ndarray], None]) -> None:
        """Call `fn(t, samples)` for every audio block accepted here (the VAD runs on the client)."""
        self.inbox.taps.append(fn)

    def latest_frame(self) -> tuple[float, np.ndarray] | None:
        """The newest frame sampled here (it may not have reached the server yet)."""
        return self.inbox.latest

    def stats(self) -> dict[str, Any]:
        """This side's counters (frames sampled, dropped, sent; questions) and the server's
        counters for this camera under "server"."""
        with self._cond:
            server = dict(self.server_stats.get("streams", {}).get(self.camera, {}))
            return {
                **self.inbox.stats(),
                **self.counters,
                "media_until": self.media_until,
                "sent_until": self.sent_until,
                "connected": self._up,
                "queued_questions": len(self._waiting),
                "server": server,
            }

    def _notify_source(self, source: str, kind: str, message: str) -> None:
        self.publish({"type": "source", "source": source, "kind": kind, "message": message})


def _already_started(status: dict[str, Any]) -> bool:
    return "already" in str(status.get("reason", "")).lower()


def _unknown_camera(status: dict[str, Any]) -> bool:
    reason = str(status.get("reason", "")).lower()
    return any(words in reason for words in ("unknown camera", "send start", "start flag"))
