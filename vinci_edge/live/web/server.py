"""The live session's web console, served by the standard library alone.

    console = WebConsole(session, port=8080).start()
    print("open", console.url)
    ...
    console.stop()

One `ThreadingHTTPServer` on loopback (by default), each request on its own daemon thread:

    GET  /            the page                  GET /static/<file>  its script and style
    GET  /events      Server-Sent Events: the recent events replayed, then every new one
    GET  /frame.jpg   the newest sampled frame (204 before the first)
    POST /ask         {"question": "..."} -> {"qid": n}; the answer streams through /events
    GET  /stats       session.stats(), with the console's own counters under "web"
    GET  /healthz     {"ok": true}

Nothing a browser does can make the session wait: events go through `EventHub`'s bounded queues and
frames through `FrameCache`'s rate-limited encoder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import re
import socket
import threading
from concurrent.futures import Future
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np

from vinci_edge.errors import VinciEdgeError
from vinci_edge.live.web.events import EventHub, Item, to_json
from vinci_edge.live.web.frames import FrameCache

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STATIC_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")  # one file in STATIC, never a path
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
# The page loads nothing from elsewhere; frames are shown from blob: URLs of /frame.jpg
CSP = "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; object-src 'none'"

MAX_QUESTION = 2000  # characters
MAX_BODY = 16 * 1024  # bytes of a POST /ask body
KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies and the browser from timing out


class Session(Protocol):
    """What the console uses of a `LiveSession`."""

    def subscribe(self, fn: Any) -> Any: ...
    def submit(self, question: str, *, origin: str) -> Future: ...
    def latest_frame(self) -> tuple[float, np.ndarray] | None: ...
    def stats(self) -> dict[str, Any]: ...


class WebConsole:
    """Serves `session` to browsers at `url` between `start()` and `stop()`.

    `port=0` takes any free port (see `url`). The default host is loopback: the console can ask
    questions and shows the camera, so exposing it on a network is the caller's explicit choice.
    """

    def __init__(self, session: Session, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.session = session
        self.host = host
        self.port = port
        self.hub = EventHub()
        self.frames = FrameCache(session.latest_frame)
        self._asking = threading.local()  # the qid of the question this thread is submitting
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._unsubscribe: Any = None

    def start(self) -> WebConsole:
        """Bind, subscribe to the session's events and serve on a daemon thread."""
        self._server = _bind(self.host, self.port, self)
        self.port = self._server.server_address[1]
        self._unsubscribe = self.session.subscribe(self._on_event)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="vinci-web", daemon=True
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}/" if ":" in host else f"http://{host}:{self.port}/"

    def stop(self) -> None:
        """Stop serving: unsubscribe, end every event stream and close the socket."""
        if self._server is None:
            return
        if callable(self._unsubscribe):
            self._unsubscribe()
        self.hub.close()
        self._server.shutdown()
        self._server.close_streams()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> WebConsole:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def web_stats(self) -> dict[str, int]:
        return {**self.hub.stats(), "jpeg_encodings": self.frames.encodings}

    def ask(self, question: str) -> tuple[HTTPStatus, dict[str, Any]]:
        """Submit a web question: 202 and its qid, or why it was refused (429 when too many are
        waiting, 503 when the session cannot take questions).

        The qid is the one of the "question" event the session publishes while submitting, on this
        thread (a future does not carry it)."""
        self._asking.qid = None
        self._asking.active = True
        try:
            future = self.session.submit(question, origin="web")
        except VinciEdgeError as exc:
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": exc.message, "reason": exc.message}
        finally:
            self._asking.active = False
        qid = getattr(future, "qid", None) or self._asking.qid
        reason = refusal(future)
        if reason is None:
            return HTTPStatus.ACCEPTED, {"qid": qid}
        status = HTTPStatus.TOO_MANY_REQUESTS if is_busy(reason) else HTTPStatus.SERVICE_UNAVAILABLE
        return status, {"error": f"refused: {reason}", "reason": reason, "qid": qid}

    def _on_event(self, event: dict[str, Any]) -> None:
        """The session's subscriber (on its threads): to the hub, noting a web question's qid."""
        if event.get("type") == "question" and getattr(self._asking, "active", False):
            self._asking.qid = event.get("qid")
        self.hub.publish(event)


# --------------------------------------------------------------------------------------------------
# The server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # event streams end on their own once the hub is closed

    def __init__(self, address: tuple[str, int], console: WebConsole, family: int) -> None:
        self.address_family = family
        self.console = console
        self._streams: set[socket.socket] = set()
        self._streams_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track_stream(self, conn: socket.socket, open_: bool) -> None:
        with self._streams_lock:
            (self._streams.add if open_ else self._streams.discard)(conn)

    def close_streams(self) -> None:
        """Shut the open event streams' sockets, which unblocks a write to a browser that stopped
        reading."""
        with self._streams_lock:
            streams = list(self._streams)
        for conn in streams:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def _bind(host: str, port: int, console: WebConsole) -> _Server:
    """The listening server, or a one-line error that says what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return _Server((host, port), console, family)
    except OSError as exc:
        where = f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise VinciEdgeError(
                f"cannot serve the web console on {where}: the port is in use",
                hint="stop whatever uses it or pick another port (--port N; 0 takes any free port)",
            ) from None
        if exc.errno == errno.EACCES:
            raise VinciEdgeError(
                f"cannot serve the web console on {where}: permission denied",
                hint="ports below 1024 need privileges; pick a port above 1024",
            ) from None
        raise VinciEdgeError(
            f"cannot serve the web console on {where}: {exc.strerror or exc}",
            hint="give an address of this machine (127.0.0.1 for this machine only, 0.0.0.0 for all)",
        ) from None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "vinci-edge-live"

    # ---- routing ----------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        path = urlsplit(self.path).path
        routes = {
            "/": lambda: self._file(STATIC / "index.html"),
            "/events": self._events,
            "/frame.jpg": self._frame,
            "/stats": self._stats,
            "/healthz": lambda: self._json(HTTPStatus.OK, {"ok": True}),
        }
        if path in routes:
            self._guarded(routes[path])
        elif path.startswith("/static/"):
            self._guarded(lambda: self._static(path.removeprefix("/static/")))
        elif path == "/ask":
            self._not_allowed("POST")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if path == "/ask":
            self._guarded(self._ask)
        elif path in ("/", "/events", "/frame.jpg", "/stats", "/healthz"):
            self._not_allowed("GET")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    def _guarded(self, route: Any) -> None:
        """Run a route; an unexpected failure is a 500 with one line, logged, not a traceback on
        the console's stderr."""
        try:
            route()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away
        except Exception as exc:
            log.exception("web console: %s %s failed", self.command, self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")

    # ---- pages ------------------------------------------------------------------------------------
    def _static(self, name: str) -> None:
        path = STATIC / name
        if not STATIC_NAME.match(name) or not path.is_file():
            self._error(HTTPStatus.NOT_FOUND, f"no such file: /static/{name}")
            return
        self._file(path)

    def _file(self, path: Path) -> None:
        body = path.read_bytes()
        kind = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        self._send(HTTPStatus.OK, body, kind, {"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})

    def _frame(self) -> None:
        frame = self.server.console.frames.get()
        if frame is None:
            self._send(HTTPStatus.NO_CONTENT, b"", None, {"Cache-Control": "no-store"})
            return
        t, jpeg = frame
        headers = {"Cache-Control": "no-store", "X-Frame-Time": f"{t:.3f}"}
        self._send(HTTPStatus.OK, jpeg, "image/jpeg", headers)

    def _stats(self) -> None:
        console = self.server.console
        self._json(HTTPStatus.OK, {**console.session.stats(), "web": console.web_stats()})

    # ---- questions --------------------------------------------------------------------------------
    def _ask(self) -> None:
        question, problem = self._read_question()
        if problem is not None:
            self._error(*problem)
            return
        self._json(*self.server.console.ask(question))

    def _read_question(self) -> tuple[str, tuple[HTTPStatus, str] | None]:
        """The question of a POST /ask body, or the status and message that refuse it."""
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            # also what keeps another site's page from posting here: JSON needs a CORS preflight
            return "", (HTTPStatus.UNSUPPORTED_MEDIA_TYPE, 'send JSON: {"question": "..."}')
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return "", (HTTPStatus.LENGTH_REQUIRED, "the request has no Content-Length")
        if length > MAX_BODY:
            return "", (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "", (HTTPStatus.BAD_REQUEST, 'the body is not JSON: send {"question": "..."}')
        return validate_question(body)

    # ---- events -----------------------------------------------------------------------------------
    def _events(self) -> None:
        """The event stream: `retry`, the replay, then events as they come and keep-alive comments
        when none do, until the browser leaves or the console stops."""
        hub = self.server.console.hub
        client, replay = hub.connect(after=_int_or_none(self.headers.get("Last-Event-ID")))
        self.server.track_stream(self.connection, True)
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")
            self.end_headers()
            self._write(b"retry: 2000\n\n" + sse_frames(replay))
            while not client.closed:
                items, lost = client.get(timeout=KEEPALIVE_S)
                if client.closed:
                    break
                chunk = sse_lost(lost, client.lost) + sse_frames(items)
                self._write(chunk or b": keep-alive\n\n")
        except OSError:
            pass  # the browser went away (or the console shut the socket to stop)
        finally:
            self.server.track_stream(self.connection, False)
            hub.disconnect(client)

    # ---- responses --------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def _send(self, status: HTTPStatus, body: bytes, kind: str | None, headers: dict[str, str]) -> None:
        self.send_response(status)
        if kind is not None:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, obj: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = to_json(obj).encode()
        self._send(status, body, "application/json", {"Cache-Control": "no-store", **(headers or {})})

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._json(status, {"error": message})

    def _not_allowed(self, allow: str) -> None:
        self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"use {allow}"}, {"Allow": allow})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the standard library's name)
        log.debug("web console: " + format, *args)


# --------------------------------------------------------------------------------------------------
# Pieces with no socket (tested on their own)


def validate_question(body: Any) -> tuple[str, tuple[HTTPStatus, str] | None]:
    """The stripped question of a decoded /ask body, or why it is refused (400)."""
    if not isinstance(body, dict) or "question" not in body:
        return "", (HTTPStatus.BAD_REQUEST, 'send {"question": "..."}')
    question = body["question"]
    if not isinstance(question, str):
        return "", (HTTPStatus.BAD_REQUEST, "the question must be a string")
    question = question.strip()
    if not question:
        return "", (HTTPStatus.BAD_REQUEST, "the question is empty")
    if len(question) > MAX_QUESTION:
        return "", (
            HTTPStatus.BAD_REQUEST,
            f"the question is {len(question)} characters long; at most {MAX_QUESTION} are accepted",
        )
    return question, None


def refusal(future: Future) -> str | None:
    """The reason of a question the session refused at once (its future already failed)."""
    if not future.done() or future.cancelled():
        return None
    exc = future.exception()
    if exc is None:
        return None
    return getattr(exc, "message", None) or str(exc)


def is_busy(reason: str) -> bool:
    """Whether a refusal means "too many questions waiting" (try again later: 429) rather than
    "the session cannot answer" (503)."""
    return "max_queued_questions" in reason or "full" in reason


def sse_frames(items: list[Item]) -> bytes:
    """Events as SSE messages: the sequence number as `id` (a reconnecting browser sends the last
    one back), the JSON as one `data` line."""
    return "".join(f"id: {item.seq}\ndata: {item.data}\n\n" for item in items).encode()


def sse_lost(lost: int, total: int) -> bytes:
    """Tells a slow page how many events it missed (queued for it too long and dropped)."""
    if not lost:
        return b""
    event = {"type": "lagging", "t": None, "lost": lost, "total_lost": total}
    return f"data: {to_json(event)}\n\n".encode()


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None
