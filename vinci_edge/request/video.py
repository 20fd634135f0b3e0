"""Video: a file -> sampled frames (+ its own audio track) -> the vision stage's rows.

Frames are sampled the official way (`num_video_frames` spread evenly over the clip), preprocessed
for the vision tower, and each turned into `tokens_per_frame` rows; the rows are pooled per the
encoder's pool sizes. When the model loads a video's audio (`load_audio_in_video`), the track
becomes an audio chunk: nested in the video chunk when TEG interleaves the two, else a chunk of its
own placed before the video (`<sound><vila/video>`, as the official prompt).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from vinci_edge import metrics as m
from vinci_edge import stages as st
from vinci_edge.config import OmniVinciConfig
from vinci_edge.kinds import Kind
from vinci_edge.media import decode_video, preprocess_frames
from vinci_edge.request.audio import audio_chunk
from vinci_edge.request.chunks import VideoChunk, content_id, source_identity
from vinci_edge.request.modality import Context, Preprocessed
from vinci_edge.stages import Stages, run_batched
from vinci_edge.timeline import VideoTimeline


class Video:
    kind = Kind.VIDEO
    noun = "a video"  # in messages: "the request has a video"
    stages = (st.VISION,)

    def __init__(self, cfg: OmniVinciConfig) -> None:
        self.cfg = cfg

    def preprocess(self, source: Path, ctx: Context, metrics: m.Metrics) -> Preprocessed:
        cfg = self.cfg
        n_frames = ctx.num_frames if ctx.num_frames is not None else cfg.num_video_frames
        with metrics.stage(m.MEDIA_DECODE):
            dv = decode_video(
                source, n_frames, load_audio=cfg.load_audio_in_video, sample_rate=cfg.audio_sampling_rate
            )
        samples = None if dv.audio is None else dv.audio.samples
        vt = VideoTimeline(dv.frame_indices, dv.fps, dv.n_source_frames, dv.expected_frame_count)
        video = video_chunk(dv.frames, vt, samples, cfg, str(source), source_identity(source), ctx, metrics)
        warnings = [f"{source}: {w}" for w in dv.warnings]
        info = _describe(video, str(source))
        if video.track is None:
            return Preprocessed([video], info, warnings)
        warnings += [f"{source} (audio): {w}" for w in dv.audio.warnings]
        info["audio_seconds"] = video.track.timeline.content_samples / video.track.timeline.sample_rate
        if cfg.interleaved_vis_aud_in_video:  # TEG: the track is laid out with the video
            return Preprocessed([video], info, warnings)
        return Preprocessed([video.track, replace(video, track=None)], info, warnings)

    def encode(self, chunk: VideoChunk, stages: Stages, metrics: m.Metrics) -> np.ndarray:
        return self.pool(self.frame_tokens(chunk.pixels, stages, metrics))

    def frame_tokens(self, pixels: np.ndarray, stages: Stages, metrics: m.Metrics) -> np.ndarray:
        """(F, tokens_per_frame, D): the vision stage on preprocessed frames (a live session runs it
        on each frame as it arrives)."""
        with metrics.stage(m.VISION, frames=int(pixels.shape[0])) as attrs:
            runner = stages[st.VISION]
            attrs["provider"] = runner.provider
            return run_batched(runner, "pixel_values", pixels, "tokens")

    def pool(self, tokens: np.ndarray) -> np.ndarray:
        """A chunk's frame tokens -> its bank rows, every pool size in turn."""
        d = tokens.shape[-1]
        return np.concatenate(
            [pool_video_features(tokens, p).reshape(-1, d) for p in self.cfg.video_encoder.pool_sizes]
        )


def video_chunk(
    frames: np.ndarray | list[np.ndarray],
    timeline: VideoTimeline,
    samples: np.ndarray | None,
    cfg: OmniVinciConfig,
    source: str,
    identity: str,
    ctx: Context,
    metrics: m.Metrics,
) -> VideoChunk:
    """The sampled RGB frames of a video (and its own track's samples at the model's rate, when
    the model hears them) -> its chunk, the track nested in it. A file's frames, or frames made in
    memory (training)."""
    with metrics.stage(m.FRAME_PREPROCESS):
        pixels = preprocess_frames(list(frames), cfg.s2_scales[0])
    extent = {"frames": timeline.frame_indices.tolist(), "size": cfg.s2_scales[0]}
    video_id = content_id(Kind.VIDEO, identity, extent, ctx.encoder_fingerprint(Kind.VIDEO))
    video = VideoChunk(video_id, source, pixels, timeline)
    if samples is None or samples.size == 0 or not cfg.load_audio_in_video:
        return video
    track = audio_chunk(samples, cfg, f"{source} (audio)", identity, ctx, metrics)
    return replace(video, track=track)


def _describe(video: VideoChunk, path: str) -> dict:
    vt = video.timeline
    return {
        "kind": "video",
        "path": path,
        "frames": vt.n_frames,
        "fps": vt.fps,
        "duration": vt.duration,
        "frame_times": [round(t, 4) for t in vt.frame_times],
        "audio_seconds": None,
    }


def pool_video_features(x: np.ndarray, pool: tuple[int, int, int]) -> np.ndarray:
    """(frames, tokens, D) averaged over (time, height, width) windows; a short last window is padded
    with the scalar mean of its elements (the official quirk)."""
    if tuple(pool) == (1, 1, 1):
        return x
    n, t, d = x.shape
    side = int(round(math.sqrt(t)))
    y = x.reshape(n, side, side, d).astype(np.float32)
    for axis, p in enumerate(pool):
        rem = y.shape[axis] % p
        if rem:
            tail = np.take(y, range(y.shape[axis] - rem, y.shape[axis]), axis=axis)
            shape = list(y.shape)
            shape[axis] = p - rem
            y = np.concatenate([y, np.full(shape, tail.mean(), y.dtype)], axis=axis)
        shape = list(y.shape)
        y = y.reshape(*shape[:axis], shape[axis] // p, p, *shape[axis + 1 :]).mean(axis=axis + 1)
    return y.reshape(y.shape[0], -1, d).astype(x.dtype)
