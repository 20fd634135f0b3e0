"""The timeline: which LLM input position comes from which frame, audio token or text token, and at
which time. One source of truth, pure numpy, used by the PyTorch reference and by the runtime.

A request becomes a `Plan`: for every position of the LLM input, its kind (text, video, audio,
image), its source (a token id, or a row of that kind's *bank*: the stage outputs of all media of
that kind, flattened in prompt order) and its CRTE coordinates (see `vinci_edge.crte`). The plan is
also a list of `Chunk`s (text run, video segment, audio segment, ...), the unit a live stream will
cache by.

What follows reproduces the official OmniVinci code path:
- frames: `round(linspace(0, n_frames - 1, num_video_frames))`, time `index / fps`;
- audio: at most `audio_chunk_length` seconds, zero-padded to a multiple of 30 s; Whisper log-mel at
  `audio_hop_length`; 3000-frame encoder chunks of 750 tokens; token i at
  `start + (i + 0.5) * padded_seconds / n_tokens`;
- TEG: segments of `interleaved_video_segment_duration` seconds, each its video tokens, a "\\n",
  its audio tokens, a "\\n"; the video's own `<sound>` placeholder is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vinci_edge import crte
from vinci_edge.config import AUDIO_CHUNK_FRAMES, EncoderConfig, OmniVinciConfig
from vinci_edge.errors import PromptError
from vinci_edge.kinds import Kind

TEXT, VIDEO, AUDIO, IMAGE = Kind.TEXT, Kind.VIDEO, Kind.AUDIO, Kind.IMAGE
KIND_NAMES = {k: k.label for k in Kind}

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
    def n_tokens(self) -> int:
        return self.n_chunks * self.tokens_per_chunk

    def token_times(self) -> np.ndarray:
        sec_per_token = self.padded_seconds / self.n_tokens
        return self.start_sec + (np.arange(self.n_tokens, dtype=np.float64) + 0.5) * sec_per_token


def audio_timeline(n_samples: int, cfg: OmniVinciConfig, start_sec: float = 0.0) -> AudioTimeline:
    """Window `n_samples` of audio at the config's rate: cap at `audio_chunk_length`, pad to 30 s."""
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
    )


# --------------------------------------------------------------------------------------------------
# Per-media embedding sequences (what each official media encoder returns), as index arrays


@dataclass
class Sequence_:
    """A run of LLM input positions: kind, source, CRTE coordinates and time per position."""

    kind: np.ndarray
    src: np.ndarray
    scale: np.ndarray
    a: np.ndarray
    b: np.ndarray
    time: np.ndarray

    @staticmethod
    def empty() -> Sequence_:
        return Sequence_.text([])

    @staticmethod
    def text(ids: Sequence[int]) -> Sequence_:
        n = len(ids)
        return Sequence_(
            kind=np.full(n, TEXT, np.int8),
            src=np.asarray(ids, np.int64).reshape(n),
            scale=np.zeros(n),
            a=np.zeros(n),
            b=np.zeros(n),
            time=np.full(n, np.nan),
        )

    def __len__(self) -> int:
        return int(self.kind.size)

    def __getitem__(self, sl: slice) -> Sequence_:
        return Sequence_(*(getattr(self, f)[sl] for f in _FIELDS))

    @staticmethod
    def cat(parts: Sequence[Sequence_]) -> Sequence_:
        if not parts:
            return Sequence_.empty()
        return Sequence_(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = ("kind", "src", "scale", "a", "b", "time")


def _media_run(
    kind: int,
    src: np.ndarray,
    times: np.ndarray,
    enc: EncoderConfig,
    rows: np.ndarray,
    n_rows: int,
    cols: np.ndarray,
    n_cols: int,
) -> Sequence_:
    n = src.size
    if enc.time is None:
        scale = a = b = np.zeros(n)
    else:
        scale, a, b = crte.token_coordinates(enc.time, times, rows, n_rows, cols, n_cols)
    return Sequence_(
        kind=np.full(n, kind, np.int8),
        src=src.astype(np.int64),
        scale=scale,
        a=a,
        b=b,
        time=np.asarray(times, np.float64),
    )


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


def video_sequence(
    video: VideoTimeline,
    cfg: OmniVinciConfig,
    bank_offset: int,
    text_ids: Callable[[str], list[int]],
) -> tuple[Sequence_, int]:
    """The official TSPVideoEncoder output for one video, per pool size: each frame's tokens
    (time-rotated) between optional start/end tokens, then optional sep tokens. Returns the sequence
    and the number of bank rows it uses (pooled features of every pool size, in order)."""
    enc = cfg.video_encoder
    start = text_ids(enc.start_tokens) if enc.start_tokens else []
    end = text_ids(enc.end_tokens) if enc.end_tokens else []
    sep = text_ids(enc.sep_tokens) if enc.sep_tokens else []
    parts: list[Sequence_] = []
    offset = bank_offset
    for pool in enc.pool_sizes:
        nt, tpf = pooled_grid(video.n_frames, cfg.tokens_per_frame, pool)
        times = pool_times(video.frame_times, pool[0])
        for f in range(nt):
            if start:
                parts.append(Sequence_.text(start))
            cols = np.arange(tpf)
            src = offset + f * tpf + cols
            parts.append(_media_run(VIDEO, src, np.full(tpf, times[f]), enc, np.full(tpf, f), nt, cols, tpf))
            if end:
                parts.append(Sequence_.text(end))
        if sep:
            parts.append(Sequence_.text(sep))
        offset += nt * tpf
    return Sequence_.cat(parts), offset - bank_offset


def audio_sequence(
    audio: AudioTimeline,
    cfg: OmniVinciConfig,
    bank_offset: int,
    text_ids: Callable[[str], list[int]],
) -> tuple[Sequence_, int]:
    """The official BasicSoundEncoder output: all chunk tokens, time-rotated, between optional
    start/end tokens."""
    enc = cfg.sound_encoder
    n = audio.n_tokens
    cols = np.arange(n)
    run = _media_run(AUDIO, bank_offset + cols, audio.token_times(), enc, np.zeros(n), 1, cols, n)
    return _between_tokens(run, enc, text_ids), n


def image_sequence(
    n_tokens: int,
    cfg: OmniVinciConfig,
    bank_offset: int,
    text_ids: Callable[[str], list[int]],
) -> tuple[Sequence_, int]:
    """BasicImageEncoder: the image tokens (no time) between optional start/end tokens."""
    enc = cfg.image_encoder
    src = bank_offset + np.arange(n_tokens)
    z = np.zeros(n_tokens)
    run = Sequence_(np.full(n_tokens, IMAGE, np.int8), src, z, z, z, np.full(n_tokens, np.nan))
    return _between_tokens(run, enc, text_ids), n_tokens


def _between_tokens(run: Sequence_, enc: EncoderConfig, text_ids: Callable[[str], list[int]]) -> Sequence_:
    """A media run between the encoder's optional start and end tokens."""
    start = Sequence_.text(text_ids(enc.start_tokens) if enc.start_tokens else [])
    end = Sequence_.text(text_ids(enc.end_tokens) if enc.end_tokens else [])
    return Sequence_.cat([start, run, end])


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


def interleave(
    video_seq: Sequence_,
    audio_seq: Sequence_,
    segments: list[Segment],
    expected_frame_count: int,
    n_stft_frames: int,
    sep_ids: list[int],
) -> tuple[Sequence_, list[tuple[int, int, int, int]]]:
    """TEG: per segment, its video tokens, a separator, its audio tokens, a separator.

    Cut points follow the official code exactly (`ceil((last_frame + 1) * video_len / frames)` and
    `ceil(stft_end * audio_len / stft_frames)`); the last segment takes all remaining video tokens.
    Returns the sequence and, per segment, (video_lo, video_hi, audio_lo, audio_hi) in the two inputs.
    """
    vis_per_frame = len(video_seq) / expected_frame_count
    aud_per_stft = len(audio_seq) / n_stft_frames
    sep = Sequence_.text(sep_ids)
    parts: list[Sequence_] = []
    spans = []
    vis_end = aud_end = 0
    for j, s in enumerate(segments):
        v_lo, a_lo = vis_end, aud_end
        if s.frames:
            new_end = min(int(np.ceil((s.frames[-1] + 1) * vis_per_frame)), len(video_seq))
            if j == len(segments) - 1:
                new_end = len(video_seq)
            parts.append(video_seq[vis_end:new_end])
            vis_end = new_end
        parts.append(sep)
        if s.stft is not None:
            new_end = min(int(np.ceil(s.stft[1] * aud_per_stft)), len(audio_seq))
            parts.append(audio_seq[aud_end:new_end])
            aud_end = max(aud_end, new_end)
        parts.append(sep)
        spans.append((v_lo, vis_end, a_lo, aud_end))
    return Sequence_.cat(parts), spans


# --------------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class VideoInput:
    timeline: VideoTimeline
    audio: AudioTimeline | None = None  # the video's own audio track, when loaded


@dataclass(frozen=True)
class AudioInput:
    timeline: AudioTimeline


@dataclass(frozen=True)
class ImageInput:
    n_tokens: int


MediaInput = VideoInput | AudioInput | ImageInput


@dataclass(frozen=True)
class Chunk:
    """A contiguous run of the plan with one meaning (llama.cpp's mtmd chunk)."""

    kind: str  # "text" | "video" | "audio" | "image" | "sep"
    start: int
    end: int
    media_index: int | None = None
    segment: int | None = None
    t0: float | None = None
    t1: float | None = None


@dataclass
class Plan:
    """Every LLM input position: kind, source, CRTE coordinates, time. See the module docstring."""

    kind: np.ndarray
    src: np.ndarray
    scale: np.ndarray
    a: np.ndarray
    b: np.ndarray
    time: np.ndarray
    chunks: list[Chunk]
    bank_rows: dict[int, int] = field(default_factory=dict)  # rows each bank must hold, per kind
    video_banks: list[tuple[int, int]] = field(default_factory=list)  # (offset, rows) per video
    audio_banks: list[tuple[int, int]] = field(default_factory=list)  # (offset, rows) per audio track

    def __len__(self) -> int:
        return int(self.kind.size)

    def counts(self) -> dict[str, int]:
        return {KIND_NAMES[k]: int((self.kind == k).sum()) for k in KIND_NAMES}

    def summary(self) -> list[dict]:
        return [c.__dict__ for c in self.chunks]


def _chunks_of(seq: Sequence_, offset: int, media_index: int, label_kind: str) -> list[Chunk]:
    """Split a media sequence into runs of media tokens and of inserted text (separators)."""
    chunks: list[Chunk] = []
    if len(seq) == 0:
        return chunks
    is_text = seq.kind == TEXT
    boundaries = np.flatnonzero(np.diff(is_text.astype(np.int8))) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(seq)]])
    for s, e in zip(starts.tolist(), ends.tolist()):
        if is_text[s]:
            chunks.append(Chunk("sep", offset + s, offset + e, media_index))
        else:
            kinds = set(seq.kind[s:e].tolist())
            kind = label_kind if len(kinds) > 1 else KIND_NAMES[kinds.pop()]
            t = seq.time[s:e]
            chunks.append(
                Chunk(kind, offset + s, offset + e, media_index, None, float(t.min()), float(t.max()))
            )
    return chunks


def build_plan(
    input_ids: Sequence[int],
    media: Sequence[MediaInput],
    cfg: OmniVinciConfig,
    marker_ids: dict[str, int],
    text_ids: Callable[[str], list[int]],
) -> Plan:
    """Replace each media placeholder of `input_ids` by its media's positions.

    `media` lists the inputs in the order their placeholders appear: `<vila/video>` for a video,
    `<sound>` for an audio input, `<image>` for an image. A video whose audio is interleaved (TEG)
    also has a `<sound>` placeholder right before its `<vila/video>`; it takes no positions.
    """
    id_to_kind = {v: k for k, v in marker_ids.items()}
    markers = [(i, id_to_kind[t]) for i, t in enumerate(input_ids) if t in id_to_kind]
    interleaving = cfg.load_audio_in_video and cfg.interleaved_vis_aud_in_video

    # Pair markers with media. A video with interleaved audio owns the <sound> just before it.
    expected: list[tuple[str, int | None]] = []  # (marker kind, media index or None if dropped)
    for m_idx, item in enumerate(media):
        if isinstance(item, VideoInput):
            if item.audio is not None and interleaving:
                expected.append(("sound", None))
            elif item.audio is not None:
                expected.append(("sound", m_idx))
            expected.append(("video", m_idx))
        elif isinstance(item, AudioInput):
            expected.append(("sound", m_idx))
        else:
            expected.append(("image", m_idx))
    got = [k for _, k in markers]
    if got != [k for k, _ in expected]:
        raise PromptError(
            f"the prompt's media placeholders {got} do not match the media given {[k for k, _ in expected]}",
            hint="give one media input per placeholder, in the same order (a video with audio is "
            "written '<sound><vila/video>')",
        )

    sep_ids = text_ids("\n")
    banks = {VIDEO: 0, AUDIO: 0, IMAGE: 0}
    video_banks: list[tuple[int, int]] = []
    audio_banks: list[tuple[int, int]] = []
    parts: list[Sequence_] = []
    chunks: list[Chunk] = []
    pos = 0
    cursor = 0

    def add_text(ids: Sequence[int]) -> None:
        nonlocal pos
        if len(ids):
            parts.append(Sequence_.text(ids))
            chunks.append(Chunk("text", pos, pos + len(ids)))
            pos += len(ids)

    def add_audio(at: AudioTimeline) -> tuple[Sequence_, int]:
        seq, rows = audio_sequence(at, cfg, banks[AUDIO], text_ids)
        audio_banks.append((banks[AUDIO], rows))
        banks[AUDIO] += rows
        return seq, rows

    for (tok_pos, marker), (_, m_idx) in zip(markers, expected):
        add_text(input_ids[cursor:tok_pos])
        cursor = tok_pos + 1
        if m_idx is None:
            continue  # the interleaved video's own <sound>
        item = media[m_idx]
        if marker == "sound":  # an audio input, or a video's track when not interleaved
            seq, _ = add_audio(item.timeline if isinstance(item, AudioInput) else item.audio)
            chunks.extend(_chunks_of(seq, pos, m_idx, "audio"))
        elif marker == "video":
            vseq, vrows = video_sequence(item.timeline, cfg, banks[VIDEO], text_ids)
            video_banks.append((banks[VIDEO], vrows))
            banks[VIDEO] += vrows
            if item.audio is not None and interleaving:
                aseq, _ = add_audio(item.audio)
                segs = teg_segments(item.timeline, item.audio, cfg)
                seq, spans = interleave(
                    vseq, aseq, segs, item.timeline.expected_frame_count, item.audio.n_stft_frames, sep_ids
                )
                chunks.extend(_segment_chunks(seq, pos, m_idx, segs, spans, len(sep_ids)))
            else:
                seq = vseq
                chunks.extend(_chunks_of(seq, pos, m_idx, "video"))
        else:
            seq, rows = image_sequence(item.n_tokens, cfg, banks[IMAGE], text_ids)
            banks[IMAGE] += rows
            chunks.extend(_chunks_of(seq, pos, m_idx, "image"))
        parts.append(seq)
        pos += len(seq)
    add_text(input_ids[cursor:])

    full = Sequence_.cat(parts)
    return Plan(
        kind=full.kind,
        src=full.src,
        scale=full.scale,
        a=full.a,
        b=full.b,
        time=full.time,
        chunks=chunks,
        bank_rows=dict(banks),
        video_banks=video_banks,
        audio_banks=audio_banks,
    )


def _segment_chunks(
    seq: Sequence_,
    offset: int,
    media_index: int,
    segs: list[Segment],
    spans: list[tuple[int, int, int, int]],
    sep_len: int,
) -> list[Chunk]:
    """Chunks of an interleaved video: per segment, video / sep / audio / sep."""
    chunks: list[Chunk] = []
    pos = offset
    for s, (v_lo, v_hi, a_lo, a_hi) in zip(segs, spans):
        for kind, n in (("video", v_hi - v_lo), ("sep", sep_len), ("audio", a_hi - a_lo), ("sep", sep_len)):
            if n:
                chunks.append(Chunk(kind, pos, pos + n, media_index, s.index, s.t0, s.t1))
                pos += n
    assert pos == offset + len(seq)
    return chunks
