"""A bounded soak: minutes of stream (a clip looped, taken in as fast as the session goes) through a
small window, with questions along the way. Once the window is full, memory stops growing; the
window never overflows; every sampled frame is accounted for; every question is answered."""

from __future__ import annotations

import resource

from vinci_edge.generation import GenerationConfig
from vinci_edge.live.session import LiveOptions, LiveSession
from vinci_edge.live.sources import FileSource
from vinci_edge.runtime.pipeline import Pipeline

STREAM_SECONDS = 240.0  # 60 passes of the 4 s clip


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_minutes_of_stream_through_a_full_window_keep_memory_flat(tiny_engine, clip):
    options = LiveOptions(fps=2.0, chunk_seconds=1.0, window=400, keep_fraction=0.5)
    session = LiveSession(Pipeline.from_engine(tiny_engine), options)
    samples: list[tuple[float, float, int]] = []  # (stream time, RSS MB, window positions)
    evictions: list[float] = []

    def watch(e: dict) -> None:
        if e["type"] == "segment":
            samples.append((e["t1"], rss_mb(), e["window_positions"]))
        elif e["type"] == "evict":
            evictions.append(e["t"])

    session.subscribe(watch)
    gen = GenerationConfig(max_new_tokens=8, ignore_eos=True)
    with session:
        session.start([FileSource(clip, realtime=False, loop=True)])
        answers = []
        for at in range(30, int(STREAM_SECONDS) + 1, 30):
            assert session.wait_until(float(at), timeout=300), f"the stream did not reach {at} s"
            answers.append(session.submit(f"What happened by {at} s?", gen=gen))
        assert all(len(f.result(60).token_ids) == 8 for f in answers)
    stats = session.stats()  # stopped: whatever was queued has been encoded

    assert stats["evictions"] >= 5, "the window filled and was evicted again and again"
    assert max(p for _, _, p in samples) <= options.window
    full = next(i for i, (t, _, _) in enumerate(samples) if t >= 60.0)  # well after the first eviction
    settled = [rss for _, rss, _ in samples[full:]]
    growth = max(settled) - settled[0]
    assert growth < 40.0, f"RSS grew {growth:.1f} MB after the window was full"
    assert stats["frames_sampled"] == (
        stats["frames_encoded"] + stats["frames_dropped"] + stats["frames_static"] + stats["frames_late"]
    )
    # played fast the source waits for room; only a frame waiting when stop() came is not taken
    assert stats["frames_dropped"] <= 1
