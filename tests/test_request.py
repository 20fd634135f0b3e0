"""The prompt as chunks: content ids, chunk positions, encode-once caching, and the one decode loop
the reference and the runtime share."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from vinci_edge.errors import EngineError, PromptError
from vinci_edge.generation import GenerationConfig, fit_context
from vinci_edge.kinds import Kind
from vinci_edge.metrics import Metrics
from vinci_edge.request.chunks import AudioChunk, TextChunk, VideoChunk
from vinci_edge.runtime.pipeline import Pipeline


@pytest.fixture(scope="module")
def pipe(tiny_engine):
    return Pipeline.from_engine(tiny_engine)


def test_a_clip_is_text_and_one_video_chunk_with_its_track(pipe, clip):
    prompt = pipe.prepare("What happens?", video=clip)
    kinds = [type(c) for c in prompt.chunks]
    assert kinds.count(VideoChunk) == 1 and set(kinds) == {TextChunk, VideoChunk}
    video = next(c for c in prompt.chunks if isinstance(c, VideoChunk))
    assert isinstance(video.track, AudioChunk)  # tiny interleaves the clip's audio (TEG)
    assert [c.kind for c in prompt.encoded_chunks] == [Kind.VIDEO, Kind.AUDIO]
    # every position belongs to exactly one chunk, in order, and the video chunk owns its media rows
    index = prompt.chunks.index(video)
    covered = sorted(
        p for i in range(len(prompt.chunks)) for r in prompt.plan.positions(i) for p in range(*r)
    )
    assert covered == list(range(len(prompt.plan)))
    owned = np.zeros(len(prompt.plan), bool)
    for lo, hi in prompt.plan.positions(index):
        owned[lo:hi] = True
    assert (prompt.plan.kind[~owned] == Kind.TEXT).all()
    assert prompt.frames.shape[0] == video.timeline.n_frames == len(prompt.media_info[0]["frame_times"])


def test_content_ids_name_the_source_the_extent_and_the_encoder(pipe, clip, tmp_path):
    a = pipe.prepare("one", video=clip).encoded_chunks
    b = pipe.prepare("another question", video=clip).encoded_chunks
    assert [c.id for c in a] == [c.id for c in b]  # the question is not part of a media chunk
    assert len({c.id for c in a}) == 2
    fewer = pipe.prepare("one", video=clip, num_frames=2).encoded_chunks
    assert fewer[0].id != a[0].id and fewer[1].id == a[1].id  # other frames; the same audio
    edited = tmp_path / "clip.mp4"
    shutil.copy(clip, edited)
    os.utime(edited, ns=(1, 1))
    assert pipe.prepare("one", video=edited).encoded_chunks[0].id != a[0].id  # another file
    other = Pipeline(pipe.engine, cache_chunks=0)
    other.prompts.encoders = "another encoder"
    assert other.prepare("one", video=clip).encoded_chunks[0].id != a[0].id


def test_a_second_question_about_the_same_clip_runs_no_encoder(tiny_engine, clip):
    pipe = Pipeline.from_engine(tiny_engine, cache_chunks=4)
    gen = GenerationConfig(max_new_tokens=4)
    first = pipe.ask("What happens?", gen, video=clip)
    second = pipe.ask("What happens?", gen, video=clip)
    names = [r.name for r in second.metrics.records]
    assert "vision" in [r.name for r in first.metrics.records] and "vision" not in names
    assert "audio" not in names and second.metrics.counters["cached_chunks"] == 2
    assert second.token_ids == first.token_ids
    uncached = Pipeline.from_engine(tiny_engine, cache_chunks=0).ask("What happens?", gen, video=clip)
    assert "vision" in [r.name for r in uncached.metrics.records] and uncached.token_ids == first.token_ids


def test_the_cache_is_bounded(tiny_engine, clip, wav):
    pipe = Pipeline.from_engine(tiny_engine, cache_chunks=1)
    m = Metrics()
    pipe.inputs_embeds(pipe.prepare("x", video=clip), m)
    assert len(pipe.cache) == 1  # the video's frames pushed out by its audio track
    pipe.inputs_embeds(pipe.prepare("x", audio=wav), m)
    assert len(pipe.cache) == 1


def test_the_context_rule_is_one_for_both_backends(tiny_ckpt, pipe, clip):
    from vinci_edge.model.reference import Reference

    assert fit_context(10, 64, 100) == (64, [])
    assert fit_context(90, 64, 100) == (10, ["max_new_tokens cut to 10 to fit the decoder context"])
    with pytest.raises(PromptError, match="decoder context is 100"):
        fit_context(100, 1, 100)
    ref = Reference.from_checkpoint(tiny_ckpt)
    n = len(ref.prepare("What happens?", video=clip).plan)
    ref.decoder.context = n  # as if the LLM held exactly the prompt: no room for an answer
    with pytest.raises(PromptError, match=f"takes {n} positions"):
        ref.answer("What happens?", GenerationConfig(max_new_tokens=4), video=clip)
    ref.decoder.context = n + 2
    ans = ref.answer("What happens?", GenerationConfig(max_new_tokens=4, ignore_eos=True), video=clip)
    assert len(ans.token_ids) == 2 and "max_new_tokens cut to 2" in ans.warnings[-1]


@pytest.mark.parametrize("backend", ["reference", "runtime"])
def test_both_backends_stream_through_the_shared_loop(tiny_ckpt, pipe, wav, backend):
    from vinci_edge.model.reference import Reference

    model = Reference.from_checkpoint(tiny_ckpt) if backend == "reference" else pipe
    ask = model.answer if backend == "reference" else model.ask
    gen = GenerationConfig(max_new_tokens=6, ignore_eos=True)
    pieces = list(model.stream("Hi", gen, audio=wav))
    answer = ask("Hi", gen, audio=wav)
    assert pieces and "".join(pieces) == answer.text and len(answer.token_ids) == 6


def test_a_stage_provider_for_an_unknown_stage_is_refused(tiny_engine):
    with pytest.raises(EngineError, match="unknown stage"):
        Pipeline.from_engine(tiny_engine, stage_providers={"vison": "cpu"})
