"""Media runners: the vision, image and audio stages, laid out as the plan's banks.

Frames and audio chunks go through their stage in bounded batches (memory stays flat for long
clips); the outputs become the VIDEO / IMAGE / AUDIO banks that `stitch` indexes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from vinci_edge import metrics as m
from vinci_edge import timeline as tl
from vinci_edge.config import OmniVinciConfig
from vinci_edge.request import PreparedRequest
from vinci_edge.runtime.backend import StageRunner
from vinci_edge.runtime.s2_merge import merge_image_features, merge_image_tokens


def pool_video_features(x: np.ndarray, pool: tuple[int, int, int]) -> np.ndarray:
    """(frames, tokens, D) averaged over (time, height, width) windows; a short last window is padded
    with the scalar mean of its elements (the official quirk, as in the reference)."""
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


class MediaEncoders:
    """Runs the media stages of a request. `get(name)` creates a stage's runner on first use."""

    def __init__(
        self,
        cfg: OmniVinciConfig,
        get: Callable[[str], StageRunner],
        frame_batch: int = 8,
        chunk_batch: int = 4,
    ) -> None:
        self.cfg = cfg
        self.get = get
        self.frame_batch = frame_batch
        self.chunk_batch = chunk_batch

    def banks(self, req: PreparedRequest, metrics: m.Metrics) -> dict[int, np.ndarray]:
        d = self.cfg.hidden_size
        banks = {k: np.zeros((0, d), np.float32) for k in (tl.VIDEO, tl.AUDIO, tl.IMAGE)}
        if req.frames is not None:
            with metrics.stage(m.VISION, frames=int(req.frames.shape[0])) as attrs:
                runner = self.get("vision")
                attrs["provider"] = runner.provider
                tokens = self._batched(runner, "pixel_values", req.frames, self.frame_batch, "tokens")
                banks[tl.VIDEO] = self._video_bank(tokens, req)
        if req.images:
            with metrics.stage(m.VISION, images=len(req.images)):
                banks[tl.IMAGE] = np.concatenate([self._image(im) for im in req.images])
        if req.mel_chunks is not None:
            with metrics.stage(m.AUDIO, chunks=int(req.mel_chunks.shape[0])) as attrs:
                runner = self.get("audio")
                attrs["provider"] = runner.provider
                out = self._batched(runner, "mel", req.mel_chunks, self.chunk_batch, "tokens")
                banks[tl.AUDIO] = out.reshape(-1, d)
        for k, rows in req.plan.bank_rows.items():
            if banks[k].shape[0] != rows:
                raise RuntimeError(f"bank {tl.KIND_NAMES[k]} has {banks[k].shape[0]} rows, plan needs {rows}")
        return banks

    @staticmethod
    def _batched(runner: StageRunner, name: str, x: np.ndarray, batch: int, out: str) -> np.ndarray:
        parts = [runner.run({name: x[i : i + batch]}, [out])[out] for i in range(0, x.shape[0], batch)]
        return np.concatenate(parts)

    def _video_bank(self, tokens: np.ndarray, req: PreparedRequest) -> np.ndarray:
        parts = []
        start = 0
        for info in req.media_info:
            if info["kind"] != "video":
                continue
            x = tokens[start : start + info["frames"]]
            start += info["frames"]
            for pool in self.cfg.video_encoder.pool_sizes:
                parts.append(pool_video_features(x, pool).reshape(-1, x.shape[-1]))
        return np.concatenate(parts) if parts else tokens.reshape(-1, tokens.shape[-1])

    def _image(self, im) -> np.ndarray:
        if im.block_size is None:  # one tile: the video path
            return self.get("vision").run({"pixel_values": im.pixels}, ["tokens"])["tokens"][0]
        feats = self._batched(self.get("vision"), "pixel_values", im.pixels, self.frame_batch, "features")
        blocks, (rows, cols) = merge_image_features(
            feats, self.cfg.s2_scales, im.block_size, self.cfg.s2_resize_output_to_scale_idx
        )
        tokens = self.get("image_projector").run({"features": blocks}, ["tokens"])["tokens"]
        return merge_image_tokens(tokens, rows, cols)
