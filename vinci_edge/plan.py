"""The plan: for every position of the LLM input, what it holds and when it happened.

A prompt is laid out item by item, in prompt order (`layout`): a text item is its token ids; a media
item is the official encoder's output sequence - its rows of encoder output between optional
start / end / separator tokens - and a video with its own audio track is TEG-interleaved segment by
segment (its video tokens, "\\n", its audio tokens, "\\n"). Each position gets:

    kind    Kind.TEXT / VIDEO / AUDIO / IMAGE
    src     a token id (text), or a row of that kind's *bank*: the encoder outputs of all items of
            that kind, concatenated in prompt order
    scale, a, b   its CRTE coordinates (`vinci_edge.crte`), time  its time in seconds (NaN for text)

and the positions are described as `Run`s: contiguous positions of one item and one meaning (media
rows, or text inserted by the layout such as TEG separators). The stitch kernels read the arrays; a
live session appends item by item.

The reference and the runtime build the same plan with this module; it follows the official code:
- video (TSPVideoEncoder), per pool size: each frame's tokens (time-rotated) between optional start
  and end tokens, then optional separator tokens;
- audio (BasicSoundEncoder): all window tokens, time-rotated, between optional start / end tokens;
- image (BasicImageEncoder): its tokens (no time) between optional start / end tokens;
- TEG cut points: `ceil((last_frame + 1) * video_len / frames)` and
  `ceil(stft_end * audio_len / stft_frames)`; the last segment takes every remaining video token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vinci_edge import crte
from vinci_edge.config import EncoderConfig, OmniVinciConfig
from vinci_edge.kinds import Kind
from vinci_edge.timeline import (
    AudioTimeline,
    Segment,
    VideoTimeline,
    pool_times,
    pooled_grid,
    teg_segments,
)

TextIds = Callable[[str], list[int]]  # the tokenizer's encode, for the encoders' start/end/sep strings


# --------------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class Run:
    """Positions [start, end) of one item with one meaning."""

    kind: Kind
    start: int
    end: int
    item: int  # index of the item in the laid-out list
    inserted: bool = False  # text the layout inserted (start / end / separator tokens)
    segment: int | None = None  # TEG segment, for an interleaved video
    t0: float | None = None
    t1: float | None = None

    @property
    def label(self) -> str:
        """ "sep" for inserted text, else the kind's name."""
        return "sep" if self.inserted else self.kind.label


@dataclass
class Plan:
    """Every LLM input position: kind, source, CRTE coordinates, time. See the module docstring."""

    kind: np.ndarray  # int8 Kind codes
    src: np.ndarray  # int64
    scale: np.ndarray  # float64
    a: np.ndarray
    b: np.ndarray
    time: np.ndarray
    runs: list[Run] = field(default_factory=list)
    bank_rows: dict[Kind, int] = field(default_factory=dict)  # rows each bank must hold

    def __len__(self) -> int:
        return int(self.kind.size)

    def counts(self) -> dict[str, int]:
        """Positions per kind, by name (the `plan` of `--json` output)."""
        return {k.label: int((self.kind == k).sum()) for k in Kind}

    def positions(self, item: int) -> list[tuple[int, int]]:
        """The position ranges an item occupies, in order (several for a TEG-interleaved video)."""
        return [(r.start, r.end) for r in self.runs if r.item == item]


# --------------------------------------------------------------------------------------------------
# Items: what the layout needs to know of each prompt part (timing and token counts, no pixels)


@dataclass(frozen=True)
class TextItem:
    ids: Sequence[int]


@dataclass(frozen=True)
class VideoItem:
    timeline: VideoTimeline
    track: AudioTimeline | None = None  # the video's own audio, TEG-interleaved with it


@dataclass(frozen=True)
class AudioItem:
    timeline: AudioTimeline


@dataclass(frozen=True)
class ImageItem:
    n_tokens: int


Item = TextItem | VideoItem | AudioItem | ImageItem


def layout(items: Sequence[Item], cfg: OmniVinciConfig, text_ids: TextIds) -> Plan:
    """Lay `items` out one after the other; see the module docstring."""
    banks = {k: 0 for k in (Kind.VIDEO, Kind.AUDIO, Kind.IMAGE)}
    parts: list[_Positions] = []
    runs: list[Run] = []
    start = 0
    for index, item in enumerate(items):
        seq, item_runs = _place(item, index, cfg, banks, text_ids)
        parts.append(seq)
        runs += [_shift(r, start) for r in item_runs]
        start += len(seq)
    full = _Positions.cat(parts)
    return Plan(full.kind, full.src, full.scale, full.a, full.b, full.time, runs, dict(banks))


def _place(
    item: Item, index: int, cfg: OmniVinciConfig, banks: dict[Kind, int], text_ids: TextIds
) -> tuple[_Positions, list[Run]]:
    """One item's positions and runs (relative to its start); takes its rows from `banks`."""
    if isinstance(item, TextItem):
        seq = _Positions.text(item.ids)
        return seq, ([Run(Kind.TEXT, 0, len(seq), index)] if len(seq) else [])
    if isinstance(item, VideoItem) and item.track is not None:
        return _interleaved_video(item, index, cfg, banks, text_ids)
    if isinstance(item, VideoItem):
        seq = video_positions(
            item.timeline, cfg, _take(banks, Kind.VIDEO, video_rows(item.timeline, cfg)), text_ids
        )
    elif isinstance(item, AudioItem):
        seq = audio_positions(item.timeline, cfg, _take(banks, Kind.AUDIO, item.timeline.n_tokens), text_ids)
    else:
        seq = image_positions(item.n_tokens, cfg, _take(banks, Kind.IMAGE, item.n_tokens), text_ids)
    return seq, _runs_of(seq, index)


def _take(banks: dict[Kind, int], kind: Kind, rows: int) -> int:
    """Reserve `rows` rows of a bank; returns where they start."""
    offset = banks[kind]
    banks[kind] += rows
    return offset


def _shift(r: Run, by: int) -> Run:
    return Run(r.kind, r.start + by, r.end + by, r.item, r.inserted, r.segment, r.t0, r.t1)


def _runs_of(seq: _Positions, index: int) -> list[Run]:
    """A media item's positions as runs of media rows and of inserted text."""
    is_text = seq.kind == Kind.TEXT
    cuts = np.flatnonzero(np.diff(is_text.astype(np.int8))) + 1
    bounds = zip(np.concatenate([[0], cuts]).tolist(), np.concatenate([cuts, [len(seq)]]).tolist())
    runs = []
    for s, e in bounds:
        if is_text[s]:
            runs.append(Run(Kind.TEXT, s, e, index, inserted=True))
        else:
            t = seq.time[s:e]
            runs.append(Run(Kind(int(seq.kind[s])), s, e, index, t0=float(t.min()), t1=float(t.max())))
    return runs


# --------------------------------------------------------------------------------------------------
# Per-medium position sequences (what each official media encoder returns), as index arrays


@dataclass
class _Positions:
    """A run of LLM input positions: kind, source, CRTE coordinates and time per position."""

    kind: np.ndarray
    src: np.ndarray
    scale: np.ndarray
    a: np.ndarray
    b: np.ndarray
    time: np.ndarray

    @staticmethod
    def text(ids: Sequence[int]) -> _Positions:
        n = len(ids)
        z = np.zeros(n)
        return _Positions(
            np.full(n, Kind.TEXT, np.int8), np.asarray(ids, np.int64).reshape(n), z, z, z, np.full(n, np.nan)
        )

    def __len__(self) -> int:
        return int(self.kind.size)

    def __getitem__(self, sl: slice) -> _Positions:
        return _Positions(*(getattr(self, f)[sl] for f in _FIELDS))

    @staticmethod
    def cat(parts: Sequence[_Positions]) -> _Positions:
        if not parts:
            return _Positions.text([])
        return _Positions(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = ("kind", "src", "scale", "a", "b", "time")


def _media(
    kind: Kind,
    src: np.ndarray,
    times: np.ndarray,
    enc: EncoderConfig,
    rows: np.ndarray,
    n_rows: int,
    cols: np.ndarray,
    n_cols: int,
) -> _Positions:
    """Media positions with their CRTE coordinates (none when the encoder has no time embedding)."""
    n = src.size
    if enc.time is None:
        scale = a = b = np.zeros(n)
    else:
        scale, a, b = crte.token_coordinates(enc.time, times, rows, n_rows, cols, n_cols)
    return _Positions(
        np.full(n, kind, np.int8), src.astype(np.int64), scale, a, b, np.asarray(times, np.float64)
    )


def _between(run: _Positions, enc: EncoderConfig, text_ids: TextIds) -> _Positions:
    """A media run between the encoder's optional start and end tokens."""
    start = _Positions.text(text_ids(enc.start_tokens) if enc.start_tokens else [])
    end = _Positions.text(text_ids(enc.end_tokens) if enc.end_tokens else [])
    return _Positions.cat([start, run, end])


def video_rows(video: VideoTimeline, cfg: OmniVinciConfig) -> int:
    """Bank rows of one video: its pooled frames' tokens for every pool size, in order."""
    rows = 0
    for pool in cfg.video_encoder.pool_sizes:
        nt, tpf = pooled_grid(video.n_frames, cfg.tokens_per_frame, pool)
        rows += nt * tpf
    return rows


def video_positions(
    video: VideoTimeline, cfg: OmniVinciConfig, bank_offset: int, text_ids: TextIds
) -> _Positions:
    """TSPVideoEncoder, per pool size: each (pooled) frame's tokens between optional start/end
    tokens, then optional separator tokens."""
    enc = cfg.video_encoder
    start = text_ids(enc.start_tokens) if enc.start_tokens else []
    end = text_ids(enc.end_tokens) if enc.end_tokens else []
    sep = text_ids(enc.sep_tokens) if enc.sep_tokens else []
    parts: list[_Positions] = []
    offset = bank_offset
    for pool in enc.pool_sizes:
        nt, tpf = pooled_grid(video.n_frames, cfg.tokens_per_frame, pool)
        times = pool_times(video.frame_times, pool[0])
        cols = np.arange(tpf)
        for f in range(nt):
            parts.append(_Positions.text(start))
            parts.append(
                _media(
                    Kind.VIDEO,
                    offset + f * tpf + cols,
                    np.full(tpf, times[f]),
                    enc,
                    np.full(tpf, f),
                    nt,
                    cols,
                    tpf,
                )
            )
            parts.append(_Positions.text(end))
        parts.append(_Positions.text(sep))
        offset += nt * tpf
    return _Positions.cat(parts)


def audio_positions(
    audio: AudioTimeline, cfg: OmniVinciConfig, bank_offset: int, text_ids: TextIds
) -> _Positions:
    """BasicSoundEncoder: every window token, time-rotated, between optional start/end tokens."""
    enc = cfg.sound_encoder
    n = audio.n_tokens
    cols = np.arange(n)
    run = _media(Kind.AUDIO, bank_offset + cols, audio.token_times(), enc, np.zeros(n), 1, cols, n)
    return _between(run, enc, text_ids)


def image_positions(n_tokens: int, cfg: OmniVinciConfig, bank_offset: int, text_ids: TextIds) -> _Positions:
    """BasicImageEncoder: the image tokens (no time) between optional start/end tokens."""
    z = np.zeros(n_tokens)
    run = _Positions(
        np.full(n_tokens, Kind.IMAGE, np.int8),
        bank_offset + np.arange(n_tokens),
        z,
        z,
        z,
        np.full(n_tokens, np.nan),
    )
    return _between(run, cfg.image_encoder, text_ids)


# --------------------------------------------------------------------------------------------------
# Temporal Embedding Grouping: a video and its own audio, segment by segment


def _interleaved_video(
    item: VideoItem, index: int, cfg: OmniVinciConfig, banks: dict[Kind, int], text_ids: TextIds
) -> tuple[_Positions, list[Run]]:
    """Per TEG segment: its video positions, a separator, its audio positions, a separator."""
    video, audio = item.timeline, item.track
    vseq = video_positions(video, cfg, _take(banks, Kind.VIDEO, video_rows(video, cfg)), text_ids)
    aseq = audio_positions(audio, cfg, _take(banks, Kind.AUDIO, audio.n_tokens), text_ids)
    segments = teg_segments(video, audio, cfg)
    cuts = _teg_cuts(segments, len(vseq), len(aseq), video.expected_frame_count, audio.n_stft_frames)
    sep = _Positions.text(text_ids("\n"))
    parts: list[_Positions] = []
    runs: list[Run] = []
    pos = 0
    for s, (v_lo, v_hi, a_lo, a_hi) in zip(segments, cuts):
        for kind, piece, inserted in (
            (Kind.VIDEO, vseq[v_lo:v_hi], False),
            (Kind.TEXT, sep, True),
            (Kind.AUDIO, aseq[a_lo:a_hi], False),
            (Kind.TEXT, sep, True),
        ):
            if len(piece):
                parts.append(piece)
                runs.append(Run(kind, pos, pos + len(piece), index, inserted, s.index, s.t0, s.t1))
                pos += len(piece)
    return _Positions.cat(parts), runs


def _teg_cuts(
    segments: list[Segment], video_len: int, audio_len: int, expected_frames: int, stft_frames: int
) -> list[tuple[int, int, int, int]]:
    """Per segment, (video_lo, video_hi, audio_lo, audio_hi) in the video's and the audio's position
    sequences, cut where the official code cuts them."""
    vis_per_frame = video_len / expected_frames
    aud_per_stft = audio_len / stft_frames
    cuts = []
    v_end = a_end = 0
    for j, s in enumerate(segments):
        v_lo, a_lo = v_end, a_end
        if s.frames:
            last = j == len(segments) - 1
            v_end = video_len if last else min(int(np.ceil((s.frames[-1] + 1) * vis_per_frame)), video_len)
        if s.stft is not None:
            a_end = max(a_end, min(int(np.ceil(s.stft[1] * aud_per_stft)), audio_len))
        cuts.append((v_lo, v_end, a_lo, a_end))
    return cuts
