"""The timeline: when each frame and each audio token happened, and how a video and its audio are cut
into TEG segments. One source of truth, pure numpy, for the reference, the runtime and the live path.

What follows reproduces the official OmniVinci code:
- frames: `round(linspace(0, n_frames - 1, num_video_frames))`, time `index / fps`;
- audio: at most `audio_chunk_length` seconds, zero-padded to a multiple of 30 s; Whisper log-mel at
  `audio_hop_length`; 3000-frame encoder windows of 750 tokens; token i at
  `start + (i + 0.5) * padded_seconds / n_tokens`;
- TEG segments of `interleaved_video_segment_duration` seconds: which frames and which STFT frames
  each one holds (`vinci_edge.plan` turns them into LLM positions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vinci_edge.config import AUDIO_CHUNK_FRAMES, OmniVinciConfig

# Audio is padded to whole multiples of this many seconds (Whisper's window).
AUDIO_PAD_SECONDS = 30


# --------------------------------------------------------------------------------------------------
# Media timing


def sample_frame_indices(n_frames: int, num: int) -> np.ndarray:
    """The official uniform sampling: `round(linspace(0, n_frames - 1, num))` (duplicates allowed
    when the clip has fewer frames than requested)."""
    if n_frames <= 0:
        raise ValueError("a video needs at least one frame")
    return np.round(np.linspace(0, n_frames - 1, num)).astype(np.int64)


@dataclass(frozen=True)
class VideoTimeline:
    """Timing of the frames a video contributes."""

    frame_indices: np.ndarray  # source index of each frame kept (decoded), in order
    fps: float
    n_source_frames: int  # frames in the stream
    expected_frame_count: int  # frames asked for (including those that failed to decode)

    @property
    def frame_times(self) -> np.ndarray:
        return self.frame_indices.astype(np.float64) / self.fps

    @property
    def duration(self) -> float:
        return self.n_source_frames / self.fps

    @property
    def n_frames(self) -> int:
        return int(self.frame_indices.size)


@dataclass(frozen=True)
class AudioTimeline:
    """Timing of an audio track once windowed the official way."""

    sample_rate: int
    hop_length: int
    start_sec: float
    content_samples: int  # samples of real audio kept (after the length cap)
    padded_samples: int  # content padded to a multiple of 30 s
    tokens_per_chunk: int
    # Keep only the tokens that cover real samples (a live chunk of a few seconds is padded to a
    # 30 s window like any audio, but its padding's tokens are dropped, not put in the prompt).
    trimmed: bool = False

    @property
    def end_sec(self) -> float:
        return self.start_sec + self.content_samples / self.sample_rate

    @property
    def padded_seconds(self) -> int:
        return self.padded_samples // self.sample_rate

    @property
    def n_stft_frames(self) -> int:
        # WhisperFeatureExtractor: centred STFT gives n // hop + 1 frames, the last one dropped.
        return self.padded_samples // self.hop_length

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_stft_frames / AUDIO_CHUNK_FRAMES)

    @property
    def n_window_tokens(self) -> int:
        """Tokens the encoder returns: every window's, padding included."""
        return self.n_chunks * self.tokens_per_chunk

    @property
    def n_tokens(self) -> int:
        """Tokens in the prompt: all of the windows', or (trimmed) those covering real samples."""
        if not self.trimmed:
            return self.n_window_tokens
        return math.ceil(self.content_samples * self.n_window_tokens / self.padded_samples)

    def token_times(self) -> np.ndarray:
        sec_per_token = self.padded_seconds / self.n_window_tokens
        return self.start_sec + (np.arange(self.n_tokens, dtype=np.float64) + 0.5) * sec_per_token


def audio_timeline(
    n_samples: int, cfg: OmniVinciConfig, start_sec: float = 0.0, trimmed: bool = False
) -> AudioTimeline:
    """Window `n_samples` of audio at the config's rate: cap at `audio_chunk_length`, pad to 30 s;
    `trimmed` keeps only the tokens of real samples (live chunks)."""
    sr = cfg.audio_sampling_rate
    cap = cfg.max_audio_seconds
    kept = n_samples if cap is None else min(n_samples, int(cap * sr))
    unit = sr * AUDIO_PAD_SECONDS
    padded = int(math.ceil(kept / unit) * unit)
    return AudioTimeline(
        sample_rate=sr,
        hop_length=cfg.audio_hop_length,
        start_sec=start_sec,
        content_samples=kept,
        padded_samples=padded,
        tokens_per_chunk=cfg.audio_tokens_per_chunk,
        trimmed=trimmed,
    )


# --------------------------------------------------------------------------------------------------
# Pooled video frames


def pool_times(times: np.ndarray, size: int) -> np.ndarray:
    """Temporal pooling of frame times: window means, the last short window padded with its own
    mean (the official quirk)."""
    times = np.asarray(times, np.float64)
    if size == 1:
        return times
    rem = times.size % size
    if rem:
        times = np.concatenate([times, np.full(size - rem, times[-rem:].mean())])
    return times.reshape(-1, size).mean(axis=1)


def pooled_grid(n_frames: int, tokens_per_frame: int, pool: tuple[int, int, int]) -> tuple[int, int]:
    """(frames, tokens per frame) after a (t, h, w) pooling of a square token grid."""
    side = int(round(math.sqrt(tokens_per_frame)))
    if side * side != tokens_per_frame:
        raise ValueError(f"video pooling needs a square token grid, got {tokens_per_frame} tokens")
    pt, ph, pw = pool
    return math.ceil(n_frames / pt), math.ceil(side / ph) * math.ceil(side / pw)


# --------------------------------------------------------------------------------------------------
# Temporal Embedding Grouping


@dataclass(frozen=True)
class Segment:
    """One TEG segment: positions (in the kept-frame list) of its frames and its STFT frame range."""

    index: int
    t0: float
    t1: float
    frames: tuple[int, ...]
    stft: tuple[int, int] | None


def teg_segments(video: VideoTimeline, audio: AudioTimeline, cfg: OmniVinciConfig) -> list[Segment]:
    """Split a video and its audio into segments of `interleaved_video_segment_duration` seconds.

    Frames go to the segment whose end frame (`(i + 1) * seg * fps`) they precede; each segment's
    audio is the STFT range overlapping its time span, cut at `round(t * (sr // hop))`.
    """
    seg = cfg.segment_duration
    fps = video.fps
    duration = video.duration
    n_seg = int(np.ceil(duration / seg))
    stft_per_sec = cfg.audio_sampling_rate // cfg.audio_hop_length  # integer division, as official
    requested = sample_frame_indices(video.n_source_frames, video.expected_frame_count)
    kept = list(video.frame_indices)

    segments: list[Segment] = []
    cursor = 0  # into the requested indices
    kept_pos = 0  # position among kept frames
    kept_iter = 0
    aud_start = 0
    for i in range(n_seg):
        end_frame = min((i + 1) * seg * fps, video.n_source_frames)
        frames: list[int] = []
        while cursor < len(requested) and requested[cursor] < end_frame:
            # a requested frame that failed to decode is skipped (it is absent from `kept`)
            if kept_iter < len(kept) and kept[kept_iter] == requested[cursor]:
                frames.append(kept_pos)
                kept_pos += 1
                kept_iter += 1
            cursor += 1
        t0 = i * seg
        t1 = min(t0 + seg, duration)
        lo, hi = max(t0, audio.start_sec), min(t1, audio.end_sec)
        stft = None
        if lo < hi:
            aud_end = round((hi - audio.start_sec) * stft_per_sec)
            stft = (aud_start, aud_end)
            aud_start = aud_end
        segments.append(Segment(i, float(t0), float(t1), tuple(frames), stft))
    return segments
