"""TEG order, token counts and token times for clips with known frame and audio timing."""

import numpy as np
import pytest

from vinci_edge import timeline as tl
from vinci_edge.config import build_config
from vinci_edge.errors import PromptError
from vinci_edge.presets import preset_components

MARKERS = {"sound": 900, "video": 901, "image": 902}
SEP = 10


def config(**root_overrides):
    root, comps = preset_components("tiny")
    root.update(root_overrides)
    return build_config(root, comps)


def text_ids(s: str) -> list[int]:
    return [SEP] if s == "\n" else [11, 12]


def test_frame_sampling_rule():
    assert tl.sample_frame_indices(100, 4).tolist() == [0, 33, 66, 99]
    # fewer frames than asked: duplicates, as the official rule gives
    assert tl.sample_frame_indices(3, 5).tolist() == [0, 0, 1, 2, 2]


def test_audio_window_pads_to_30s_and_caps():
    cfg = config(audio_chunk_length=40, audio_hop_length=160)
    at = tl.audio_timeline(16000 * 45, cfg)  # 45 s, capped at 40, padded to 60
    assert at.content_samples == 16000 * 40 and at.padded_seconds == 60
    assert at.n_stft_frames == 6000 and at.n_chunks == 2 and at.n_tokens == 1500
    hop60 = tl.audio_timeline(16000 * 8, config(audio_hop_length=60))
    assert hop60.n_stft_frames == 8000 and hop60.n_chunks == 3 and hop60.n_tokens == 2250
    # token i sits at start + (i + 0.5) * padded_seconds / n_tokens
    assert hop60.token_times()[:2] == pytest.approx([0.5 * 30 / 2250, 1.5 * 30 / 2250])


def test_teg_order_counts_and_times():
    # 10 s video at 10 fps, 4 frames -> source frames 0, 33, 66, 99; 4 s segments; 10 s of audio
    cfg = config(interleaved_video_segment_duration=4, audio_hop_length=160, num_video_frames=4)
    video = tl.VideoTimeline(tl.sample_frame_indices(100, 4), 10.0, 100, 4)
    audio = tl.audio_timeline(16000 * 10, cfg)  # padded to 30 s: 3000 STFT frames, 750 tokens
    segs = tl.teg_segments(video, audio, cfg)
    assert [s.frames for s in segs] == [(0, 1), (2,), (3,)]
    assert [s.stft for s in segs] == [(0, 400), (400, 800), (800, 1000)]  # 100 STFT frames / s

    ids = [1, 2, MARKERS["sound"], MARKERS["video"], 3, 4]
    plan = tl.build_plan(ids, [tl.VideoInput(video, audio)], cfg, MARKERS, text_ids)
    tpf = cfg.tokens_per_frame  # 4
    # video: 16 tokens cut at ceil((f+1) * 4) = 8, 12, 16; audio: 750 / 3000 per STFT frame -> 100,
    # 200, 250 (the padding after 10 s is never used); one separator after each part
    expect = (
        [("text", 2)]
        + [("video", 8), ("sep", 1), ("audio", 100), ("sep", 1)]
        + [("video", 4), ("sep", 1), ("audio", 100), ("sep", 1)]
        + [("video", 4), ("sep", 1), ("audio", 50), ("sep", 1)]
        + [("text", 2)]
    )
    assert [(c.kind, c.end - c.start) for c in plan.chunks] == expect
    assert len(plan) == 2 + 16 + 250 + 6 + 2
    assert plan.counts() == {"text": 10, "video": 16, "audio": 250, "image": 0}
    # the <sound> placeholder of the video takes no positions; the separators are "\n"
    assert (plan.src[plan.kind == tl.TEXT] == [1, 2] + [SEP] * 6 + [3, 4]).all()

    v = plan.kind == tl.VIDEO
    assert plan.src[v].tolist() == list(range(16 * 1))[:16]  # frame-major bank rows, in order
    assert np.unique(plan.time[v]).tolist() == [0.0, 3.3, 6.6, 9.9]  # frame index / fps
    a = plan.kind == tl.AUDIO
    assert plan.src[a].tolist() == list(range(250))
    assert plan.time[a][:3] == pytest.approx([0.02, 0.06, 0.10])  # (i + .5) * 30 / 750
    assert plan.bank_rows == {tl.VIDEO: 4 * tpf, tl.AUDIO: 750, tl.IMAGE: 0}
    # times never go backwards within a modality: TEG keeps time order
    assert (np.diff(plan.time[a]) > 0).all() and (np.diff(plan.time[v]) >= 0).all()


def test_frames_that_failed_to_decode_are_skipped():
    cfg = config(interleaved_video_segment_duration=4)
    video = tl.VideoTimeline(np.array([0, 66, 99]), 10.0, 100, 4)  # frame 33 failed
    audio = tl.audio_timeline(16000 * 10, cfg)
    segs = tl.teg_segments(video, audio, cfg)
    assert [s.frames for s in segs] == [(0,), (1,), (2,)]
    plan = tl.build_plan(
        [MARKERS["sound"], MARKERS["video"]], [tl.VideoInput(video, audio)], cfg, MARKERS, text_ids
    )
    assert plan.counts()["video"] == 3 * cfg.tokens_per_frame


def test_not_interleaved_and_video_without_audio():
    cfg = config(interleaved_vis_aud_in_video=False)
    video = tl.VideoTimeline(tl.sample_frame_indices(40, 4), 10.0, 40, 4)
    audio = tl.audio_timeline(16000 * 4, cfg)
    ids = [MARKERS["sound"], MARKERS["video"], 5]
    plan = tl.build_plan(ids, [tl.VideoInput(video, audio)], cfg, MARKERS, text_ids)
    kinds = [c.kind for c in plan.chunks]
    assert kinds == ["audio", "video", "text"]  # <sound> then <vila/video>, whole tracks
    assert plan.counts()["audio"] == 750
    plan2 = tl.build_plan([MARKERS["video"], 5], [tl.VideoInput(video)], cfg, MARKERS, text_ids)
    assert [c.kind for c in plan2.chunks] == ["video", "text"]


def test_audio_only_and_image():
    cfg = config()
    audio = tl.audio_timeline(16000 * 3, cfg)
    plan = tl.build_plan(
        [1, MARKERS["image"], MARKERS["sound"], 2],
        [tl.ImageInput(12), tl.AudioInput(audio)],
        cfg,
        MARKERS,
        text_ids,
    )
    assert [(c.kind, c.end - c.start) for c in plan.chunks] == [
        ("text", 1),
        ("image", 12),
        ("sep", 1),
        ("audio", 750),
        ("text", 1),
    ]  # image end token "\n"
    assert plan.bank_rows[tl.IMAGE] == 12 and plan.bank_rows[tl.AUDIO] == 750


def test_marker_media_mismatch_is_an_error():
    cfg = config()
    audio = tl.audio_timeline(16000, cfg)
    with pytest.raises(PromptError, match="do not match"):
        tl.build_plan([1, 2], [tl.AudioInput(audio)], cfg, MARKERS, text_ids)
    with pytest.raises(PromptError, match="do not match"):
        tl.build_plan([MARKERS["video"]], [tl.AudioInput(audio)], cfg, MARKERS, text_ids)


def test_temporal_pooling_times_and_counts():
    assert tl.pool_times(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), 2).tolist() == [0.5, 2.5, 4.0]
    assert tl.pooled_grid(5, 16, (2, 2, 2)) == (3, 4)
    cfg = config(
        video_encoder='{"_target_": "x.TSPVideoEncoder", "pool_sizes": [[2, 1, 1], [1, 2, 2]],'
        ' "end_tokens": "None", "sep_tokens": "\\n", "embed_time": "True",'
        ' "period_fix": "shortest", "trope_dim": 16, "max_time": 100}'
    )
    video = tl.VideoTimeline(tl.sample_frame_indices(30, 3), 10.0, 30, 3)
    seq, rows = tl.video_sequence(video, cfg, 0, text_ids)
    # pool (2,1,1): 2 frames x 4 tokens; pool (1,2,2): 3 frames x 1 token; a sep after each
    assert rows == 8 + 3 and len(seq) == 8 + 1 + 3 + 1
    assert seq.time[:8].tolist() == [0.7, 0.7, 0.7, 0.7, 2.9, 2.9, 2.9, 2.9]
