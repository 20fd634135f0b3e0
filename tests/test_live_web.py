"""The live web console: its HTTP endpoints against a stand-in session (SSE framing and replay, /ask
validation, frames, a slow client), and the page end to end in a real headless Chromium."""

from __future__ import annotations

import http.client
import io
import json
import shutil
import socket
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vinci_edge.errors import VinciEdgeError
from vinci_edge.live.session import QuestionRefused
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
        """Like LiveSession.submit: the "question" event (with the qid) is published on the caller's
        thread; a refusal is a future that already failed."""
        future: Future = Future()
        self.submitted.append((question, origin))
        qid = len(self.submitted)
        self.publish({"type": "question", "t": 0.0, "qid": qid, "question": question, "origin": origin})
        if self.refusal is not None:
            future.set_exception(self.refusal)
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
    for after, seqs in ((8, [9, 10]), (99, [6, 7, 8, 9, 10])):  # 99: an id from before a restart
        other, replay = hub.connect(after=after)
        assert [item.seq for item in replay] == seqs
        hub.disconnect(other)
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
    assert elapsed < 10 and slowest < 1.0, (elapsed, slowest)
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


def test_a_refused_question_is_429_when_too_many_wait_else_503_with_the_reason(served):
    session, console = served
    session.refusal = QuestionRefused("8 questions are already waiting (max_queued_questions)")
    status, reply = ask(console, {"question": "hi"})
    assert status == 429 and reply == {
        "error": "refused: 8 questions are already waiting (max_queued_questions)",
        "reason": "8 questions are already waiting (max_queued_questions)",
        "qid": 1,
    }
    session.refusal = QuestionRefused("the session is not running")
    status, reply = ask(console, {"question": "hi"})
    assert status == 503 and reply["reason"] == "the session is not running"


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


# --------------------------------------------------------------------------------------------------
# The page in a real browser, over a real session playing the test clip as if live

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACT = Path(__file__).resolve().parents[1] / "test-artifacts" / "web-console.png"


class ClipSource:
    """The test clip played as if live (test-only): its frames and audio decoded by FFmpeg through
    `vinci_edge.media.decode`, each delivered at its own time on the stream clock."""

    video = audio = True
    realtime = False

    def __init__(self, path: Path, fps: float = 2.0, block_seconds: float = 0.25) -> None:
        self.name = path.name
        self.path, self.fps, self.block_seconds = path, fps, block_seconds

    def run(self, clock, sink, stop) -> None:
        from vinci_edge.live.packets import ENDED, stamp

        start = clock.now()
        for t, kind, data in self._schedule():
            at = stamp(start + t)
            if not clock.sleep_until(at, stop):
                break
            if kind == "audio":
                sink.audio(at, data)
            elif sink.want_frame(at):
                sink.frame(at, data)
        sink.notice(self.name, ENDED, "the clip played to its end")

    def _schedule(self) -> list[tuple[float, str, np.ndarray]]:
        """(clip time, "frame" | "audio", data) of every sampled frame and audio block, in order."""
        from vinci_edge.media.decode import decode_video, probe

        frames = max(1, round(probe(self.path)["duration"] * self.fps))
        decoded = decode_video(self.path, num_frames=frames)
        items = [(float(t), "frame", rgb) for t, rgb in zip(decoded.frame_times, decoded.frames)]
        if decoded.audio is not None:
            samples, rate = decoded.audio.samples, decoded.audio.sample_rate
            step = round(self.block_seconds * rate)
            items += [(i / rate, "audio", samples[i : i + step]) for i in range(0, len(samples), step)]
        return sorted(items, key=lambda item: item[0])


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)  # both paths given: Selenium Manager never runs
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()


COLORED_PIXELS = """
const canvas = document.getElementById("chart");
const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let colored = 0;
for (let i = 0; i < data.length; i += 4)
  if (data[i + 3] && !(data[i] === data[i + 1] && data[i + 1] === data[i + 2])) colored++;
return colored;
"""


def test_the_console_in_a_real_browser(browser, tiny_engine, clip, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from vinci_edge.live.session import LiveOptions, LiveSession
    from vinci_edge.runtime.pipeline import Pipeline

    events: list[dict] = []
    session = LiveSession(Pipeline.from_engine(tiny_engine), LiveOptions(fps=2.0, chunk_seconds=1.0))
    session.subscribe(events.append)
    with session, WebConsole(session, port=0) as console:
        session.start([ClipSource(clip)])
        browser.get(console.url)
        wait = WebDriverWait(browser, 20, poll_frequency=0.1)

        # the live view shows a sampled frame, with its stream time
        wait.until(lambda d: d.execute_script("return document.getElementById('frame').naturalWidth") > 0)
        assert browser.find_element(By.ID, "frame-time").text.endswith(" s")

        # the latency chart plots each segment's stage timings as it is appended
        wait.until(lambda d: int(d.find_element(By.ID, "chart").get_attribute("data-points")) >= 8)
        assert browser.execute_script(COLORED_PIXELS) > 0

        # a question typed and asked (about two seconds of media) streams its answer in, piece by
        # piece, to the final text
        browser.find_element(By.ID, "question").send_keys("What is moving in the picture?")
        browser.find_element(By.ID, "ask").click()
        card = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#answers article[data-state='done']"))
        qid = int(card.get_attribute("data-qid"))
        (answer,) = [e for e in events if e["type"] == "answer" and e["qid"] == qid]
        assert answer["question"] == "What is moving in the picture?"
        assert card.find_element(By.CSS_SELECTOR, ".text").get_attribute("textContent") == answer["text"]
        assert card.get_attribute("data-match") == "true"  # the streamed pieces added up to it
        assert any(e["type"] == "text" and e["qid"] == qid for e in events)

        assert answer["media_until"] >= 1.0
        # ... and its time to first token joins the chart
        wait.until(lambda d: "time to first token" in d.find_element(By.ID, "latency-summary").text)

        # alerts and source notices are logged
        session.publish({"type": "alert", "message": "a person entered the frame"})
        wait.until(lambda d: "a person entered the frame" in d.find_element(By.ID, "alerts").text)
        wait.until(lambda d: "the clip played to its end" in d.find_element(By.ID, "sources").text)

        browser.set_window_size(1200, browser.execute_script("return document.body.scrollHeight") + 140)
        shot = tmp_path / "web-console.png"
        browser.save_screenshot(str(shot))
        ARTIFACT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, ARTIFACT)
        assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        browser.get("about:blank")  # before the console stops: no polling of a closed port
