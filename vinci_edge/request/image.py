"""Image: a file -> tiles -> the vision stage (+ the image projector for dynamic S2) -> rows.

With dynamic S2 (`image_aspect_ratio: dynamic_s2`) an image becomes tiles at every S2 scale; the
vision stage's features of all tiles are merged into projector-sized blocks (`s2_merge`), the image
projector turns each block into tokens, and the blocks' tokens are laid out as one grid. Otherwise
the image is one tile and takes the video path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vinci_edge import metrics as m
from vinci_edge import stages as st
from vinci_edge.config import OmniVinciConfig
from vinci_edge.kinds import Kind
from vinci_edge.media import decode_image, dynamic_s2_tiles, preprocess_frames
from vinci_edge.request.chunks import ImageChunk, content_id, source_identity
from vinci_edge.request.modality import Context, Preprocessed
from vinci_edge.request.s2_merge import merge_image_features, merge_image_tokens
from vinci_edge.stages import Stages, run_batched


class Image:
    kind = Kind.IMAGE
    noun = "an image"  # in messages: "the request has an image"

    def __init__(self, cfg: OmniVinciConfig) -> None:
        self.cfg = cfg
        dynamic = cfg.image_aspect_ratio == "dynamic_s2"
        self.stages = (st.VISION, st.IMAGE_PROJECTOR) if dynamic else (st.VISION,)

    def preprocess(self, source: Path, ctx: Context, metrics: m.Metrics) -> Preprocessed:
        with metrics.stage(m.MEDIA_DECODE):
            image = decode_image(source)
        with metrics.stage(m.FRAME_PREPROCESS):
            pixels, block_size, n_tokens = self._tiles(image)
        extent = {"shape": list(image.shape), "block_size": block_size, "size": self.cfg.s2_scales}
        chunk_id = content_id(
            Kind.IMAGE, source_identity(source), extent, ctx.encoder_fingerprint(Kind.IMAGE)
        )
        chunk = ImageChunk(chunk_id, str(source), pixels, block_size, n_tokens)
        info = {
            "kind": "image",
            "path": str(source),
            "tiles": int(pixels.shape[0]),
            "block_size": block_size,
            "tokens": n_tokens,
        }
        return Preprocessed([chunk], info)

    def _tiles(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int] | None, int]:
        """(pixels, block size, tokens): the dynamic-S2 tiling, or one tile."""
        cfg = self.cfg
        size = cfg.s2_scales[0]
        if cfg.image_aspect_ratio != "dynamic_s2":
            return preprocess_frames([image], size), None, cfg.tokens_per_frame
        tiles, block = dynamic_s2_tiles(image, cfg.s2_scales, cfg.max_tiles, size)
        rows, cols = block
        if cfg.s2_resize_output_to_scale_idx not in (-1, len(cfg.s2_scales) - 1):
            k = cfg.s2_scales[cfg.s2_resize_output_to_scale_idx] // cfg.s2_scales[0]
            rows, cols = k, k
        return preprocess_frames(tiles, size), block, rows * cols * cfg.tokens_per_frame

    def encode(self, chunk: ImageChunk, stages: Stages, metrics: m.Metrics) -> np.ndarray:
        with metrics.stage(m.VISION, images=1):
            vision = stages[st.VISION]
            if chunk.block_size is None:  # one tile: the video path
                return vision.run({"pixel_values": chunk.pixels}, ["tokens"])["tokens"][0]
            feats = run_batched(vision, "pixel_values", chunk.pixels, "features")
            cfg = self.cfg
            blocks, (rows, cols) = merge_image_features(
                feats, cfg.s2_scales, chunk.block_size, cfg.s2_resize_output_to_scale_idx
            )
            tokens = stages[st.IMAGE_PROJECTOR].run({"features": blocks}, ["tokens"])["tokens"]
            return merge_image_tokens(tokens, rows, cols)
