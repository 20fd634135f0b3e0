"""Dynamic-S2 image feature merging in numpy: what the reference does between tower and projector.

An image arrives as tiles: k x k tiles for every fixed S2 scale but the last (k = scale / scales[0]),
then a rows x cols tiling of the aspect-ratio-preserving resize. The vision stage turns each tile into
a (P, C) feature (P = g*g patches); here the tiles of each scale are laid out as one feature map,
every map is area-resized to the size of scale `resize_idx`, the maps are stacked along channels, and
the result is cut into projector-sized blocks. After the image projector, `merge_image_tokens` lays
the blocks' tokens out as one row-major grid.

Equal to the reference's `merge_s2_features` + `split_chessboard` + flatten, and
`merge_chessboard(...).flatten(2).transpose(1, 2)[0]` (vinci_edge.model.vision). Torch-free; maps
are kept channels-last (H, W, C), which makes every step a reshape/transpose.
"""

from __future__ import annotations

import math

import numpy as np


def _tile_grid(tiles: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(rows*cols, g*g, C) row-major tiles -> one (rows*g, cols*g, C) map."""
    n, p, c = tiles.shape
    g = math.isqrt(p)
    if g * g != p or n != rows * cols:
        raise ValueError(f"expected {rows}x{cols} tiles of a square patch grid, got {tiles.shape}")
    x = tiles.reshape(rows, cols, g, g, c).transpose(0, 2, 1, 3, 4)
    return x.reshape(rows * g, cols * g, c)


def area_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) weights of adaptive average pooling along one axis, which is what
    F.interpolate(mode="area") is: output i averages inputs [floor(i*n/m), ceil((i+1)*n/m)).
    Holds for downsampling, upsampling and non-integer ratios alike."""
    m = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)  # ceil without floats
        m[i, start:end] = 1.0 / (end - start)
    return m


def area_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) -> (h, w, C) area interpolation, computed in float64 (2-D adaptive average pooling
    is separable: a box mean is the mean over rows of the means over columns)."""
    h, w = size
    if x.shape[:2] == (h, w):
        return x.astype(np.float64)
    rows = np.tensordot(area_matrix(x.shape[0], h), x.astype(np.float64), axes=(1, 0))  # (h, W, C)
    return np.einsum("jw,hwc->hjc", area_matrix(x.shape[1], w), rows)


def merge_image_features(
    features: np.ndarray, scales: list[int], block_size: tuple[int, int], resize_idx: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """Tower features of one image's tiles (N, P, C) -> projector input blocks
    (out_rows*out_cols, P_block, C*len(scales)) and the output block size (out_rows, out_cols).

    `scales` are the sorted S2 scales, `block_size` the (rows, cols) tiling of the last scale,
    `resize_idx` the scale whose size every map is resized to (s2_resize_output_to_scale_idx).
    """
    scales = list(scales)
    rows, cols = block_size
    maps = []
    cursor = 0
    for scale in scales[:-1]:
        k = scale // scales[0]
        maps.append(_tile_grid(features[cursor : cursor + k * k], k, k))
        cursor += k * k
    maps.append(_tile_grid(features[cursor : cursor + rows * cols], rows, cols))
    cursor += rows * cols
    if cursor != features.shape[0]:
        raise ValueError(
            f"{features.shape[0]} tiles do not match the S2 layout of scales {scales} with a "
            f"{rows}x{cols} last scale ({cursor} tiles)"
        )
    size = maps[resize_idx].shape[:2]
    # The reference resizes in float32 and casts back to the feature dtype; float64 here is at
    # least as exact, and the cast back gives the same dtype.
    merged = np.concatenate([area_resize(m, size) for m in maps], axis=-1).astype(features.dtype)

    if resize_idx in (-1, len(scales) - 1):
        out_rows, out_cols = rows, cols
    else:
        k = scales[resize_idx] // scales[0]
        out_rows, out_cols = k, k
    h, w, c = merged.shape
    bh, bw = h // out_rows, w // out_cols  # split_chessboard's (floor) block size
    merged = merged[: bh * out_rows, : bw * out_cols]
    blocks = merged.reshape(out_rows, bh, out_cols, bw, c).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(blocks.reshape(out_rows * out_cols, bh * bw, c)), (out_rows, out_cols)


def merge_image_tokens(tokens: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Projected blocks (rows*cols, t*t, D) -> the image's tokens (rows*t * cols*t, D), row-major over
    the whole grid (the reference's merge_chessboard + flatten)."""
    return _tile_grid(tokens, rows, cols).reshape(-1, tokens.shape[-1])
