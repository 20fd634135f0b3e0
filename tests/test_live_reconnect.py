"""A live session over a network camera that goes away and comes back: the loss is reported, the
session keeps answering about what it has, reconnects with backoff, and goes on taking media in.
The camera is Debian's ffmpeg serving a clip over HTTP on loopback, killed and started again."""

from __future__ import annotations

import time

from stream_helpers import free_port, needs_ffmpeg, serve_http

from vinci_edge.generation import GenerationConfig
from vinci_edge.live.session import LiveOptions, LiveSession
from vinci_edge.live.sources import Retry, StreamSource
from vinci_edge.runtime.pipeline import Pipeline

GREEDY = GenerationConfig(max_new_tokens=6, ignore_eos=True)


def eventually(condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


@needs_ffmpeg
def test_a_camera_that_drops_is_reported_and_the_session_keeps_answering(tiny_engine, clip):
    url = f"http://127.0.0.1:{free_port()}/live.ts"
    events: list[dict] = []
    session = LiveSession(Pipeline.from_engine(tiny_engine), LiveOptions(fps=2.0, chunk_seconds=1.0))
    session.subscribe(events.append)
    notices = lambda kind: [e for e in events if e["type"] == "source" and e["kind"] == kind]  # noqa: E731
    with session:
        session.start([StreamSource(url, retry=Retry(first_delay=0.2, max_delay=0.5))])
        with serve_http(clip, url):
            assert eventually(lambda: session.stats()["segments"] >= 2, 30), session.stats()
        # the camera is gone: said so, and questions are still answered about what the cache holds
        assert eventually(lambda: notices("lost"), 15), events[-5:]
        during = session.ask("What is there?", gen=GREEDY, timeout=30)
        assert len(during.token_ids) == 6 and during.media_until > 0
        with serve_http(clip, url):
            assert eventually(lambda: notices("reconnected"), 20)
            assert eventually(lambda: session.media_until > during.media_until + 1.5, 30)
            after = session.ask("What is there now?", gen=GREEDY, timeout=30)
    assert after.media_until > during.media_until and len(after.token_ids) == 6
    assert session.stats()["frames_late"] == 0  # times kept increasing across the reconnect
