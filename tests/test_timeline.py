"""TEG order, token counts and token times for clips with known frame and audio timing."""

import numpy as np
import pytest

from vinci_edge import timeline as tl
from vinci_edge.config import build_config
from vinci_edge.errors import PromptError
from vinci_edge.kinds import Kind
from vinci_edge.plan import AudioItem, ImageItem, TextItem, VideoItem, layout, video_positions, video_rows
from vinci_edge.presets import preset_components
from vinci_edge.request.chunks import AudioChunk, TextChunk, VideoChunk
from vinci_edge.request.prompt import split_at_placeholders

MARKERS = {Kind.AUDIO: 900, Kind.VIDEO: 901, Kind.IMAGE: 902}
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

    plan = layout([TextItem([1, 2]), VideoItem(video, audio), TextItem([3, 4])], cfg, text_ids)
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
    assert [(r.label, r.end - r.start) for r in plan.runs] == expect
    assert len(plan) == 2 + 16 + 250 + 6 + 2
    assert plan.counts() == {"text": 10, "video": 16, "audio": 250, "image": 0}
    # the <sound> placeholder of the video takes no positions; the separators are "\n"
    assert (plan.src[plan.kind == Kind.TEXT] == [1, 2] + [SEP] * 6 + [3, 4]).all()

    v = plan.kind == Kind.VIDEO
    assert plan.src[v].tolist() == list(range(16 * 1))[:16]  # frame-major bank rows, in order
    assert np.unique(plan.time[v]).tolist() == [0.0, 3.3, 6.6, 9.9]  # frame index / fps
    a = plan.kind == Kind.AUDIO
    assert plan.src[a].tolist() == list(range(250))
    assert plan.time[a][:3] == pytest.approx([0.02, 0.06, 0.10])  # (i + .5) * 30 / 750
    assert plan.bank_rows == {Kind.VIDEO: 4 * tpf, Kind.AUDIO: 750, Kind.IMAGE: 0}
    # times never go backwards within a modality: TEG keeps time order
    assert (np.diff(plan.time[a]) > 0).all() and (np.diff(plan.time[v]) >= 0).all()


def test_frames_that_failed_to_decode_are_skipped():
    cfg = config(interleaved_video_segment_duration=4)
    video = tl.VideoTimeline(np.array([0, 66, 99]), 10.0, 100, 4)  # frame 33 failed
    audio = tl.audio_timeline(16000 * 10, cfg)
    segs = tl.teg_segments(video, audio, cfg)
    assert [s.frames for s in segs] == [(0,), (1,), (2,)]
    plan = layout([VideoItem(video, audio)], cfg, text_ids)
    assert plan.counts()["video"] == 3 * cfg.tokens_per_frame


def test_not_interleaved_and_video_without_audio():
    cfg = config(interleaved_vis_aud_in_video=False)
    video = tl.VideoTimeline(tl.sample_frame_indices(40, 4), 10.0, 40, 4)
    audio = tl.audio_timeline(16000 * 4, cfg)
    # without TEG the video's track is a chunk of its own, at its <sound> placeholder
    plan = layout([AudioItem(audio), VideoItem(video), TextItem([5])], cfg, text_ids)
    kinds = [r.label for r in plan.runs]
    assert kinds == ["audio", "video", "text"]  # <sound> then <vila/video>, whole tracks
    assert plan.counts()["audio"] == 750
    plan2 = layout([VideoItem(video), TextItem([5])], cfg, text_ids)
    assert [r.label for r in plan2.runs] == ["video", "text"]


def test_audio_only_and_image():
    cfg = config()
    audio = tl.audio_timeline(16000 * 3, cfg)
    plan = layout([TextItem([1]), ImageItem(12), AudioItem(audio), TextItem([2])], cfg, text_ids)
    assert [(r.label, r.end - r.start) for r in plan.runs] == [
        ("text", 1),
        ("image", 12),
        ("sep", 1),
        ("audio", 750),
        ("text", 1),
    ]  # image end token "\n"
    assert plan.bank_rows[Kind.IMAGE] == 12 and plan.bank_rows[Kind.AUDIO] == 750


def test_marker_media_mismatch_is_an_error():
    cfg = config()
    audio = AudioChunk("a", "a.wav", np.zeros((1, 128, 3000), np.float32), tl.audio_timeline(16000, cfg))
    with pytest.raises(PromptError, match="do not match"):
        split_at_placeholders([1, 2], [audio], MARKERS)
    with pytest.raises(PromptError, match="do not match"):
        split_at_placeholders([MARKERS[Kind.VIDEO]], [audio], MARKERS)


def test_placeholders_split_the_prompt_into_chunks():
    cfg = config()
    video = VideoChunk(
        "v",
        "v.mp4",
        np.zeros((4, 3, 8, 8), np.float32),
        tl.VideoTimeline(tl.sample_frame_indices(100, 4), 10.0, 100, 4),
        AudioChunk("a", "v.mp4 (audio)", np.zeros((1, 128, 3000), np.float32), tl.audio_timeline(16000, cfg)),
    )
    ids = [1, 2, MARKERS[Kind.AUDIO], 7, MARKERS[Kind.VIDEO], 3]
    chunks = split_at_placeholders(ids, [video], MARKERS)
    # the TEG video's own <sound> takes no chunk; the text between its placeholders stays before it
    assert [type(c) for c in chunks] == [TextChunk, TextChunk, VideoChunk, TextChunk]
    assert [c.ids for c in chunks if isinstance(c, TextChunk)] == [(1, 2), (7,), (3,)]
    plan = layout([c.item() for c in chunks], cfg, text_ids)
    # the video chunk owns its interleaved runs; the text chunks theirs
    assert {r.item for r in plan.runs if r.kind in (Kind.VIDEO, Kind.AUDIO) or r.inserted} == {2}
    assert [r.label for r in plan.runs if r.item == 2][:4] == ["video", "sep", "audio", "sep"]
    assert [r.item for r in plan.runs if r.label == "text"] == [0, 1, 3]
    assert plan.positions(2)[0][0] == 3 and plan.positions(3) == [(len(plan) - 1, len(plan))]


def test_temporal_pooling_times_and_counts():
    assert tl.pool_times(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), 2).tolist() == [0.5, 2.5, 4.0]
    assert tl.pooled_grid(5, 16, (2, 2, 2)) == (3, 4)
    cfg = config(
        video_encoder='{"_target_": "x.TSPVideoEncoder", "pool_sizes": [[2, 1, 1], [1, 2, 2]],'
        ' "end_tokens": "None", "sep_tokens": "\\n", "embed_time": "True",'
        ' "period_fix": "shortest", "trope_dim": 16, "max_time": 100}'
    )
    video = tl.VideoTimeline(tl.sample_frame_indices(30, 3), 10.0, 30, 3)
    seq, rows = video_positions(video, cfg, 0, text_ids), video_rows(video, cfg)
    # pool (2,1,1): 2 frames x 4 tokens; pool (1,2,2): 3 frames x 1 token; a sep after each
    assert rows == 8 + 3 and len(seq) == 8 + 1 + 3 + 1
    assert seq.time[:8].tolist() == [0.7, 0.7, 0.7, 0.7, 2.9, 2.9, 2.9, 2.9]
