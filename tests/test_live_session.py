"""The live session on real clips played as live through FFmpeg, with the tiny engine: the same plan
and the same greedy tokens as the offline runtime given the same chunks, the cache reused across
questions, eviction, bounded queues that drop and count, refusals with reasons."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from vinci_edge.live.sources import FileSource

from vinci_edge.generation import GenerationConfig
from vinci_edge.kinds import Kind
from vinci_edge.live.segments import AudioBuffer, FrameSampler, StaticFilter
from vinci_edge.live.session import LiveOptions, LiveSession, QuestionRefused
from vinci_edge.plan import layout
from vinci_edge.runtime.pipeline import Pipeline

GREEDY = GenerationConfig(max_new_tokens=12, ignore_eos=True)


@pytest.fixture(scope="module")
def offline(tiny_engine) -> Pipeline:
    """A second pipeline: the offline runtime the live answers are compared with."""
    return Pipeline.from_engine(tiny_engine)


def played(engine, clip, **options) -> LiveSession:
    """A session that has played `clip` (as fast as it takes it) to its end."""
    session = LiveSession(Pipeline.from_engine(engine), LiveOptions(**options))
    session.start([FileSource(clip, realtime=False)])
    assert session.join(timeout=120), "the clip was not taken in within 120 s"
    return session


def offline_answer(offline: Pipeline, session: LiveSession, question: str, gen=GREEDY):
    prompt = offline.prompts.from_chunks(session.window_chunks() + [session.question_chunk(question)])
    return prompt, offline.answer(prompt, gen)


# ---- parity with the offline runtime ---------------------------------------------------------------
def test_a_clip_played_as_live_gives_the_offline_plan_and_tokens(tiny_engine, clip, offline):
    with played(tiny_engine, clip, fps=2.0, chunk_seconds=1.0, keep_inputs=True) as session:
        live = session.ask("What happens in the clip?", gen=GREEDY, timeout=60)
        prompt, ref = offline_answer(offline, session, "What happens in the clip?")

        # The cache holds what the offline prompt lays out, position for position ...
        entries = list(session.window.entries)
        tail = session.question_chunk("What happens in the clip?")
        pieces = [layout([session.window.head.item()], session.cfg, session.tokenizer.encode)]
        pieces += [
            layout([c.item() for c in e.chunks], session.cfg, session.tokenizer.encode) for e in entries
        ]
        pieces += [layout([tail.item()], session.cfg, session.tokenizer.encode)]
        for field in ("kind", "time", "scale", "a", "b"):
            joined = np.concatenate([getattr(p, field) for p in pieces])
            np.testing.assert_array_equal(joined, getattr(prompt.plan, field), err_msg=field)
        # ... its stitched rows equal the offline stitch of the same chunks, encoded again from pixels ...
        metrics = offline.metrics_factory()
        whole = offline.inputs_embeds(prompt, metrics)
        cached = np.concatenate([e.embeds for e in entries])
        head = len(session.window.head.ids)
        np.testing.assert_allclose(cached, whole[head : head + cached.shape[0]], rtol=1e-4, atol=1e-5)
        # ... and the greedy answer is the same token for token.
        assert live.token_ids == ref.token_ids
        assert live.answer.prompt_tokens == len(prompt.plan)

    # The media are where the stream clock put them: frames at 2 per second, TEG groups of 1 s.
    video_times = prompt.plan.time[prompt.plan.kind == Kind.VIDEO]
    assert np.unique(video_times).tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
    assert session.stats()["segments"] >= 4


def test_questions_reuse_the_cached_media_and_roll_back(tiny_engine, clip, offline):
    with played(tiny_engine, clip, fps=1.0, chunk_seconds=2.0, keep_inputs=True) as session:
        encoded = session.stats()["frames_encoded"]
        first = session.ask("Describe it.", gen=GREEDY, timeout=60)
        second = session.ask("What colour is it?", gen=GREEDY, timeout=60)
        # no encoder ran for the questions: they are appended after the cached media
        assert session.stats()["frames_encoded"] == encoded
        assert not set(second.answer.metrics.totals()) & {"vision", "audio", "log_mel"}
        # the first question and its answer were rolled back: the second sees only the media
        assert second.token_ids == offline_answer(offline, session, "What colour is it?")[1].token_ids
        assert first.token_ids == offline_answer(offline, session, "Describe it.")[1].token_ids
        assert second.ttft_s > 0 and second.media_until == pytest.approx(session.media_until)


def test_a_kept_conversation_is_part_of_the_next_prompt(tiny_engine, clip, offline):
    with played(
        tiny_engine, clip, fps=1.0, chunk_seconds=2.0, conversation=True, keep_inputs=True
    ) as session:
        session.ask("Describe it.", gen=GREEDY, timeout=60)
        turns = [c for c in session.window_chunks() if c.kind == Kind.TEXT and len(c.ids) > 5]
        assert turns, "the first question and answer stay in the cache"
        second = session.ask("And then?", gen=GREEDY, timeout=60)
        assert second.token_ids == offline_answer(offline, session, "And then?")[1].token_ids


def test_a_full_window_evicts_the_oldest_segments_and_still_matches(tiny_engine, clip, offline):
    events = []
    session = LiveSession(
        Pipeline.from_engine(tiny_engine),
        LiveOptions(fps=2.0, chunk_seconds=1.0, window=160, keep_fraction=0.5, keep_inputs=True),
    )
    session.subscribe(events.append)
    with session:
        session.start([FileSource(clip, realtime=False)])
        assert session.join(timeout=120)
        stats = session.stats()
        assert stats["evictions"] >= 1 and stats["window_positions"] <= 160
        evictions = [e for e in events if e["type"] == "evict"]
        assert evictions and all(e["dropped_positions"] > 0 and e["seconds"] >= 0 for e in evictions)
        # the newest media stayed, the head (system prompt) stayed, the oldest went
        assert session.window.t0 > 0.0 and session.window.entries[-1].t1 == pytest.approx(session.media_until)
        live = session.ask("What is happening now?", gen=GREEDY, timeout=60)
        assert live.token_ids == offline_answer(offline, session, "What is happening now?")[1].token_ids


def test_until_waits_for_the_stream_to_reach_that_time(tiny_engine, clip):
    session = LiveSession(Pipeline.from_engine(tiny_engine), LiveOptions(fps=1.0, chunk_seconds=1.0))
    with session:
        session.start([FileSource(clip, realtime=True)])
        answer = session.ask("What now?", gen=GREEDY, until=2.0, timeout=60)
        assert answer.media_until >= 2.0
        assert answer.frame is not None and 1.0 <= answer.frame[0] < 2.0 + 1e-9


# ---- bounded queues: nothing grows, everything is counted, every question answered or refused --------
def test_a_busy_worker_drops_real_time_frames_and_counts_them(tiny_engine, clip):
    session = LiveSession(
        Pipeline.from_engine(tiny_engine), LiveOptions(fps=10.0, chunk_seconds=1.0, max_queued_frames=1)
    )
    release = threading.Event()
    with session:
        session.start([FileSource(clip, realtime=True)])
        # an answer whose reader is slow holds the worker while the camera keeps going
        busy = session.submit("Hold on", gen=GREEDY, on_text=lambda _: release.wait(10))
        time.sleep(1.5)
        release.set()
        busy.result(30)
        assert session.join(60)
        s = session.stats()
    assert s["frames_dropped"] > 0
    assert (
        s["frames_sampled"]
        == s["frames_encoded"] + s["frames_dropped"] + s["frames_static"] + s["frames_late"]
    )
    assert s["queued_frames"] == 0


def test_questions_past_the_queue_limit_are_refused_with_a_reason(tiny_engine, clip):
    session = LiveSession(Pipeline.from_engine(tiny_engine), LiveOptions(max_queued_questions=1))
    release = threading.Event()
    refused = []
    session.subscribe(lambda e: refused.append(e) if e["type"] == "refused" else None)
    with session:
        session.start([FileSource(clip, realtime=False)])
        assert session.join(60)
        held = session.submit("one", gen=GREEDY, on_text=lambda _: release.wait(10))
        time.sleep(0.3)  # the worker is inside the first answer
        queued = session.submit("two", gen=GREEDY)
        over = session.submit("three", gen=GREEDY)
        with pytest.raises(QuestionRefused, match="already waiting"):
            over.result(10)
        release.set()
        assert held.result(30).token_ids and queued.result(30).token_ids
        empty = session.submit("   ")
        with pytest.raises(QuestionRefused, match="empty"):
            empty.result(5)
    assert [e["reason"] for e in refused][:1] == ["1 questions are already waiting (max_queued_questions)"]


def test_stop_answers_the_questions_already_queued(tiny_engine, clip):
    session = LiveSession(Pipeline.from_engine(tiny_engine), LiveOptions())
    session.start([FileSource(clip, realtime=True)])
    futures = [session.submit(f"question {i}", gen=GREEDY) for i in range(3)]
    session.stop()
    assert all(f.result(30).token_ids for f in futures)
    with pytest.raises(QuestionRefused, match="not running"):
        session.submit("late").result(5)


def test_a_static_scene_is_encoded_once(tiny_engine, tmp_path):
    from vinci_edge.media.synth import make_test_clip

    still = make_test_clip(tmp_path / "still.mp4", seconds=3.0, fps=10, tone_hz=0.0)
    moving = played(tiny_engine, still, fps=5.0, chunk_seconds=1.0)
    with played(tiny_engine, still, fps=5.0, chunk_seconds=1.0, static_threshold=0.5) as quiet, moving:
        assert quiet.stats()["frames_static"] > 0
        assert quiet.stats()["frames_encoded"] < moving.stats()["frames_encoded"]
        assert moving.stats()["frames_static"] == 0


# ---- the parts ----------------------------------------------------------------------------------
def test_audio_buffer_keeps_the_grid_fills_gaps_and_drops_overlaps():
    buf = AudioBuffer(10)
    buf.add(0.0, np.ones(10, np.float32))
    buf.add(0.5, np.full(10, 2, np.float32))  # overlaps the first by 5 samples: the first copy stays
    buf.add(2.0, np.full(5, 3, np.float32))  # a 0.5 s gap before it: silence
    assert buf.until == pytest.approx(2.5)
    assert buf.take(0.0, 1.0).tolist() == [1.0] * 10
    assert buf.take(1.0, 2.0).tolist() == [2.0] * 5 + [0.0] * 5
    assert buf.take(2.0, 3.0).tolist() == [3.0] * 5  # cut at the last sample that arrived
    assert buf.take(3.0, 4.0) is None


def test_frame_sampler_takes_one_frame_per_slot():
    sampler = FrameSampler(2.0)
    taken = []
    for t in np.arange(0, 2.0, 0.1):
        if sampler.wants(float(t)):
            sampler.take(float(t))
            taken.append(round(float(t), 3))
    assert taken == [0.0, 0.5, 1.0, 1.5]


def test_static_filter_compares_with_the_last_kept_frame():
    f = StaticFilter(0.05)
    grey = np.full((48, 64, 3), 100, np.uint8)
    assert not f.is_static(grey)
    assert f.is_static(grey + 5)  # 5/255 < 0.05
    assert not f.is_static(grey + 40)
    assert not StaticFilter(None).is_static(grey)


def test_options_are_checked():
    with pytest.raises(ValueError, match="fps"):
        LiveOptions(fps=0)
    with pytest.raises(ValueError, match="keep_fraction"):
        LiveOptions(keep_fraction=1.0)
