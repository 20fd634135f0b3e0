"""The live web console: its HTTP endpoints against a stand-in session (SSE framing and replay, /ask
validation, frames, a slow client), and the page end to end in a real headless Chromium."""

from __future__ import annotations

import http.client
import io
import json
import socket
import time
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vinci_edge.errors import VinciEdgeError
from vinci_edge.live.web import WebConsole
from vinci_edge.live.web.events import CLIENT_QUEUE, EventHub


class StandInSession:
    """What the console uses of a LiveSession, with events published by the test."""

    def __init__(self) -> None:
        self.subscribers: list[Any] = []
        self.frame: tuple[float, np.ndarray] | None = None
        self.frame_calls = 0
        self.submitted: list[tuple[str, str]] = []
        self.refusal: Exception | None = None

    def subscribe(self, fn):
        self.subscribers.append(fn)
        return lambda: self.subscribers.remove(fn)

    def publish(self, event: dict) -> None:
        for fn in list(self.subscribers):
            fn(event)

    def latest_frame(self):
        self.frame_calls += 1
        return self.frame

    def stats(self) -> dict:
        return {"frames_encoded": 3, "frames_dropped": 1, "window_positions": 120}

    def submit(self, question: str, *, origin: str = "api") -> Future:
        future: Future = Future()
        if self.refusal is not None:
            future.set_exception(self.refusal)
            return future
        self.submitted.append((question, origin))
        future.qid = len(self.submitted)  # type: ignore[attr-defined]
        return future


@pytest.fixture
def served():
    session = StandInSession()
    with WebConsole(session, port=0) as console:
        yield session, console


def request(console: WebConsole, method: str, path: str, body: bytes | None = None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", console.port, timeout=5)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def ask(console: WebConsole, body: Any, content_type: str = "application/json"):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response, data = request(console, "POST", "/ask", raw, {"Content-Type": content_type})
    return response.status, json.loads(data)


def open_events(console: WebConsole, last_id: int | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", console.port, timeout=5)
    conn.request("GET", "/events", headers={"Last-Event-ID": str(last_id)} if last_id else {})
    response = conn.getresponse()
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return response


def read_messages(stream: http.client.HTTPResponse, count: int) -> list[dict[str, str]]:
    """The next `count` SSE messages (blocks separated by a blank line), comments left out."""
    messages: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    while len(messages) < count:
        line = stream.fp.readline().decode()
        assert line, "the event stream ended"
        line = line.rstrip("\n")
        if not line:
            if fields:
                messages.append(fields)
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value
    return messages


# --------------------------------------------------------------------------------------------------
# Events


def test_events_are_sse_messages_replayed_to_a_late_page_then_streamed(served):
    session, console = served
    for k in range(3):
        session.publish({"type": "segment", "t": float(k), "timings": {"vision": np.float32(0.5)}})
    stream = open_events(console)
    retry, *replay = read_messages(stream, 4)
    assert retry == {"retry": "2000"}
    assert [m["id"] for m in replay] == ["1", "2", "3"]
    assert json.loads(replay[0]["data"]) == {"type": "segment", "t": 0.0, "timings": {"vision": 0.5}}

    session.publish({"type": "text", "t": 3.5, "qid": 1, "text": "two\nlines"})
    (live,) = read_messages(stream, 1)
    assert live["id"] == "4" and json.loads(live["data"])["text"] == "two\nlines"  # one data line

    # a browser reconnecting with the last id it saw gets only what came after it
    again = open_events(console, last_id=3)
    assert [m.get("id") for m in read_messages(again, 2)] == [None, "4"]
    stream.close()
    again.close()


def test_the_replay_is_bounded_and_a_slow_client_loses_its_oldest_events_counted():
    hub = EventHub(replay=5, client_queue=3)
    for k in range(10):
        hub.publish({"type": "x", "t": float(k)})
    client, replay = hub.connect()
    assert [item.seq for item in replay] == [6, 7, 8, 9, 10]
    for k in range(10, 17):
        hub.publish({"type": "x", "t": float(k)})
    items, lost = client.get(timeout=0)
    assert [item.seq for item in items] == [15, 16, 17] and lost == 4
    assert client.get(timeout=0) == ([], 0)  # told once
    assert hub.stats()["events_lost"] == 4


def test_a_browser_that_stops_reading_never_holds_up_the_session(served):
    session, console = served
    stalled = socket.create_connection(("127.0.0.1", console.port))
    stalled.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads a byte
    deadline = time.monotonic() + 5
    while console.hub.stats()["clients"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)

    payload = "x" * 8192
    slowest = 0.0
    start = time.monotonic()
    for k in range(4000):  # 32 MB: far more than the socket buffers hold
        t0 = time.perf_counter()
        session.publish({"type": "text", "t": float(k), "qid": 1, "text": payload})
        slowest = max(slowest, time.perf_counter() - t0)
    elapsed = time.monotonic() - start

    stats = console.hub.stats()
    assert stats["events_lost"] > 0, stats
    assert elapsed < 10 and slowest < 0.5, (elapsed, slowest)
    (client,) = console.hub._clients
    assert client.pending() <= CLIENT_QUEUE
    stalled.close()


def test_stop_ends_the_open_event_streams(served):
    session, console = served
    stream = open_events(console)
    read_messages(stream, 1)
    start = time.monotonic()
    console.stop()
    assert stream.fp.read() == b""  # the server closed it
    assert time.monotonic() - start < 3


# --------------------------------------------------------------------------------------------------
# Questions


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        ({"question": ""}, "application/json", 400, "the question is empty"),
        ({"question": "   \n"}, "application/json", 400, "the question is empty"),
        ({"question": "x" * 2001}, "application/json", 400, "2001 characters long; at most 2000"),
        ({"question": 42}, "application/json", 400, "must be a string"),
        ({"text": "hi"}, "application/json", 400, '{"question": "..."}'),
        (b"{not json", "application/json", 400, "not JSON"),
        ({"question": "hi"}, "text/plain", 415, "send JSON"),
    ],
)
def test_ask_refuses_a_bad_question_with_a_json_error(served, body, content_type, status, error):
    session, console = served
    got_status, reply = ask(console, body, content_type)
    assert got_status == status and error in reply["error"]
    assert session.submitted == []


def test_ask_submits_a_web_question_and_answers_its_qid_at_once(served):
    session, console = served
    assert ask(console, {"question": "  what is moving?  "}) == (202, {"qid": 1})
    assert ask(console, {"question": "y" * 2000})[0] == 202
    assert session.submitted[0] == ("what is moving?", "web")


def test_ask_when_the_queue_is_full_is_429_with_the_reason(served):
    session, console = served
    session.refusal = VinciEdgeError("the question queue is full (8 waiting)")
    status, reply = ask(console, {"question": "hi"})
    assert status == 429 and reply["reason"] == "the question queue is full (8 waiting)"


def test_get_ask_is_405(served):
    _, console = served
    response, _ = request(console, "GET", "/ask")
    assert response.status == 405 and response.headers["Allow"] == "POST"


# --------------------------------------------------------------------------------------------------
# Frames, stats, pages


def test_frame_is_204_before_the_first_then_a_jpeg_encoded_once_per_frame(served):
    session, console = served
    response, body = request(console, "GET", "/frame.jpg")
    assert response.status == 204 and body == b""

    session.frame = (1.25, np.full((48, 64, 3), 200, np.uint8))
    response, body = request(console, "GET", "/frame.jpg")
    assert response.status == 200 and response.headers["Content-Type"] == "image/jpeg"
    assert response.headers["X-Frame-Time"] == "1.250"
    assert Image.open(io.BytesIO(body)).size == (64, 48)
    for _ in range(5):
        request(console, "GET", "/frame.jpg")
    assert console.frames.encodings == 1  # cached by frame time, the session asked at most 4/s


def test_stats_healthz_and_static_files(served):
    _, console = served
    response, body = request(console, "GET", "/stats")
    stats = json.loads(body)
    assert stats["frames_encoded"] == 3 and stats["web"]["clients"] == 0
    assert json.loads(request(console, "GET", "/healthz")[1]) == {"ok": True}

    response, body = request(console, "GET", "/")
    assert response.status == 200 and b"/static/console.js" in body
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    response, _ = request(console, "GET", "/static/console.js")
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/javascript")
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2fserver.py", "/static/"):
        assert request(console, "GET", path)[0].status == 404, path


def test_a_port_in_use_is_one_line_with_a_hint(served):
    _, console = served
    with pytest.raises(VinciEdgeError) as err:
        WebConsole(StandInSession(), port=console.port).start()
    assert "\n" not in err.value.message and "in use" in err.value.message
    assert "port" in err.value.hint
