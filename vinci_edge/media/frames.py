"""Turn decoded RGB frames into vision-tower inputs, exactly as the official preprocessing does.

`preprocess_frames` reproduces transformers' `SiglipImageProcessor` (size {height, width}: resize
with PIL bicubic on the uint8 image, ignoring the aspect ratio; rescale by 1/255 in float64, cast to
float32; normalise in float32). `dynamic_s2_tiles` reproduces OmniVinci's `dynamic_s2_preprocess`,
the multi-scale tiling of still images. Only numpy and Pillow: no torch, no transformers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

RESCALE_FACTOR = 1 / 255


def preprocess_frames(
    frames: Sequence[np.ndarray],
    size: int,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> np.ndarray:
    """RGB uint8 HxWx3 frames -> float32 N x 3 x size x size pixel values (SigLIP preprocessing)."""
    if not frames:
        return np.zeros((0, 3, size, size), dtype=np.float32)
    resized = np.stack([_resize(_as_rgb_uint8(f), size, size) for f in frames])
    # Same arithmetic, in the same precisions, as transformers' `rescale` then `normalize`, so the
    # result is bit-identical rather than merely close.
    pixels = (resized.astype(np.float64) * RESCALE_FACTOR).astype(np.float32)
    pixels = (pixels - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))


def dynamic_s2_tiles(
    image: np.ndarray, scales: Sequence[int], max_tiles: int, tile_size: int
) -> tuple[list[np.ndarray], tuple[int, int]]:
    """Tile an RGB image for the dynamic-S2 vision tower (OmniVinci `dynamic_s2_preprocess`).

    Every scale but the last gives a fixed square grid: the image resized to
    `(scale // scales[0]) * tile_size` square, cut into tiles. The last scale gives a grid of
    `cols x rows` tiles whose aspect ratio is closest to the image's, with at least
    `(scales[-1] // scales[0]) ** 2` and at most `max_tiles` tiles. Tiles are tile_size x tile_size
    RGB uint8, row-major, fixed scales first. Returns the tiles and the last grid's (rows, cols).
    """
    scales = sorted(int(s) for s in scales)
    pil = Image.fromarray(_as_rgb_uint8(image))
    width, height = pil.size

    tiles: list[np.ndarray] = []
    for scale in scales[:-1]:
        side = scale // scales[0]
        tiles.extend(_grid_tiles(pil, side, side, tile_size))

    min_tiles = (scales[-1] // scales[0]) ** 2
    cols, rows = _closest_grid(width, height, _candidate_grids(min_tiles, max_tiles), tile_size)
    tiles.extend(_grid_tiles(pil, cols, rows, tile_size))
    return tiles, (rows, cols)


# --------------------------------------------------------------------------------------------------


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
    return image


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    # Pillow's default filter for RGB images is bicubic, which is what both the SigLIP processor
    # (resample=BICUBIC) and the official tiling (`image.resize(size)`, no filter given) use.
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def _candidate_grids(min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
    """All (cols, rows) grids with min_tiles <= cols * rows <= max_tiles, by tile count.

    Built and sorted exactly as the official code does (a set, sorted by tile count), because the
    order among grids of equal tile count decides exact aspect-ratio ties (e.g. 9 tiles max and a
    5:1 image: 3x3 and 9x1 are equally close). That order is deterministic: it depends only on the
    tuples' hashes, and hashes of int tuples are not randomised by PYTHONHASHSEED (the tests check).
    """
    grids = {
        (i, j)
        for n in range(min_tiles, max_tiles + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if i * j <= max_tiles and i * j >= min_tiles
    }
    return sorted(grids, key=lambda g: g[0] * g[1])


def _closest_grid(width: int, height: int, grids: list[tuple[int, int]], tile_size: int) -> tuple[int, int]:
    """The grid whose cols/rows is closest to width/height (official `find_closest_aspect_ratio`).

    On a tie the later (larger) grid wins only when the image has more than half its pixels.
    """
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in grids:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


def _grid_tiles(image: Image.Image, cols: int, rows: int, tile_size: int) -> list[np.ndarray]:
    """Resize to cols x rows tiles (aspect ratio not kept) and cut them out row by row."""
    resized = np.asarray(image.resize((cols * tile_size, rows * tile_size), Image.Resampling.BICUBIC))
    return [
        resized[r * tile_size : (r + 1) * tile_size, c * tile_size : (c + 1) * tile_size].copy()
        for r in range(rows)
        for c in range(cols)
    ]
