"""Constrained Rotary Time Embedding (CRTE), in numpy float64.

OmniVinci rotates the projected media embeddings by their absolute time *before* the LLM. Both
official branches reduce to one form, which is what the C++/CUDA kernel implements too:

    angle[j]          = scale * a * freqs_a[j]     for j < len(freqs_a)
    angle[len_a + j]  = scale * b * freqs_b[j]     for j < len(freqs_b)
    x'[:R] = x[:R] * cos(angle) + rotate_half(x[:R]) * sin(angle),   R = len_a + len_b
    rotate_half maps each interleaved pair (x0, x1) to (-x1, x0); channels >= R pass through.

- MTCT ("shortest" / "longest"): freqs_a = w (dim/2 values, NOT repeated per pair, so the two
  channels of a pair turn at different rates), freqs_b empty, a = t, scale = 1.
- axial ("lang" / "pixel"): freqs_a = freqs_b = the rotary table repeated per pair (dim each),
  a / b = the token's (row, column) grid position, scale = the token's time angle.

The reference works in float64; so does this module. Angles are formed in float64 from float64
times, so large times (an hour of video) lose no precision before cos/sin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vinci_edge.config import OmniVinciConfig, TimeEmbedding
from vinci_edge.kinds import Kind


@dataclass(frozen=True)
class RotationTable:
    """The constant frequency tables of one encoder's CRTE."""

    freqs_a: np.ndarray  # float64
    freqs_b: np.ndarray  # float64

    @property
    def rot_dim(self) -> int:
        return int(self.freqs_a.size + self.freqs_b.size)


def mtct_frequencies(dim: int, max_time: float, period_mode: str = "shortest") -> np.ndarray:
    """MaxTimeContinuousTime frequencies w_i, i = 0 .. dim/2 - 1 (radians per second).

    shortest: w_i = 2 pi / (max_time * 5 ** (i / (dim/2)))   (fastest turns once over max_time)
    longest:  theta = max_time ** ((dim/2) / (dim/2 - 1)),  w_i = 2 pi / theta ** (i / (dim/2))
    """
    half = dim // 2
    i = np.arange(half, dtype=np.float64)
    if period_mode == "shortest":
        return 2.0 * math.pi / (max_time * 5.0 ** (i / half))
    if period_mode == "longest":
        theta = max_time ** (half / (half - 1))
        return 2.0 * math.pi / theta ** (i / half)
    raise ValueError(f"unknown MTCT period mode {period_mode!r}")


def axial_frequencies(te: TimeEmbedding) -> np.ndarray:
    """One axis of the 'lang' / 'pixel' rotary table, repeated per pair (length te.dim)."""
    half = te.dim // 2
    if te.freqs_for == "lang":
        theta = te.max_time / (2.0 * math.pi) if te.max_time is not None else te.theta
        base = 1.0 / theta ** (np.arange(0, te.dim, 2, dtype=np.float64)[:half] / te.dim)
    elif te.freqs_for == "pixel":
        base = np.linspace(1.0, te.max_freq / 2.0, half, dtype=np.float64) * math.pi
    else:
        raise ValueError(f"unknown rotary table {te.freqs_for!r}")
    return np.repeat(base, 2)


def rotation_table(te: TimeEmbedding) -> RotationTable:
    if te.branch == "mtct":
        return RotationTable(
            freqs_a=mtct_frequencies(te.dim, te.max_time, te.period_mode or "shortest"),
            freqs_b=np.zeros(0, dtype=np.float64),
        )
    axis = axial_frequencies(te)
    return RotationTable(freqs_a=axis, freqs_b=axis.copy())


def rotation_tables(cfg: OmniVinciConfig) -> dict[Kind, RotationTable | None]:
    """Each medium's rotation table (None: its rows are not rotated). Images carry no time."""
    video, sound = cfg.video_encoder.time, cfg.sound_encoder.time
    return {
        Kind.VIDEO: rotation_table(video) if video else None,
        Kind.AUDIO: rotation_table(sound) if sound else None,
        Kind.IMAGE: None,
    }


def axis_positions(te: TimeEmbedding, index: np.ndarray, count: int) -> np.ndarray:
    """Grid coordinate of `index` along an axis of `count` cells, as the rotary table sees it:
    'pixel' spreads the axis over [-1, 1], 'lang' counts 0, 1, 2, ...; a table built with max_time
    then scales positions by 2 pi / max_time."""
    index = np.asarray(index, dtype=np.float64)
    if te.freqs_for == "pixel":
        pos = np.linspace(-1.0, 1.0, count, dtype=np.float64)[index.astype(np.int64)] if count else index
    else:
        pos = index
    if te.max_time is not None:
        pos = pos / te.max_time * (2.0 * math.pi)
    return pos


def time_scale(te: TimeEmbedding, times: np.ndarray) -> np.ndarray:
    """The per-token angle multiplier of the axial branch."""
    times = np.asarray(times, dtype=np.float64)
    if te.period_fix == "True":
        if te.angle_max_time is not None:
            return times / te.angle_max_time * (2.0 * math.pi)
        return times
    return -times * 2.0 * math.pi


def token_coordinates(
    te: TimeEmbedding,
    times: np.ndarray,
    rows: np.ndarray,
    n_rows: int,
    cols: np.ndarray,
    n_cols: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scale, a, b) per token for `apply_rotation`.

    `times` are seconds; `rows`/`cols` are the token's cell in the axial grid (frame x token-in-frame
    for video, 1 x token for audio); MTCT ignores the grid.
    """
    times = np.asarray(times, dtype=np.float64)
    if te.branch == "mtct":
        return np.ones_like(times), times.copy(), np.zeros_like(times)
    return (
        time_scale(te, times),
        axis_positions(te, rows, n_rows),
        axis_positions(te, cols, n_cols),
    )


def rotation_angles(table: RotationTable, scale: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles (n x rot_dim) in float64."""
    scale = np.asarray(scale, dtype=np.float64)[:, None]
    ang_a = scale * np.asarray(a, dtype=np.float64)[:, None] * table.freqs_a[None, :]
    if table.freqs_b.size == 0:
        return ang_a
    ang_b = scale * np.asarray(b, dtype=np.float64)[:, None] * table.freqs_b[None, :]
    return np.concatenate([ang_a, ang_b], axis=1)


def rotate_half(x: np.ndarray) -> np.ndarray:
    """Each interleaved pair (x0, x1) -> (-x1, x0)."""
    out = np.empty_like(x)
    out[..., 0::2] = -x[..., 1::2]
    out[..., 1::2] = x[..., 0::2]
    return out


def apply_rotation(
    x: np.ndarray, table: RotationTable, scale: np.ndarray, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """Rotate the first `table.rot_dim` channels of each row of `x` (n x D); float64 inside,
    returned in x's dtype."""
    rot = table.rot_dim
    if rot % 2:
        raise ValueError(f"CRTE rotates pairs of channels; rotation width {rot} is odd")
    if rot > x.shape[-1]:
        raise ValueError(f"CRTE rotates {rot} channels but the embeddings are {x.shape[-1]} wide")
    out = x.astype(np.float64, copy=True)
    if x.shape[0] == 0 or rot == 0:
        return out.astype(x.dtype)
    ang = rotation_angles(table, scale, a, b)
    head = out[:, :rot]
    out[:, :rot] = head * np.cos(ang) + rotate_half(head) * np.sin(ang)
    return out.astype(x.dtype)
