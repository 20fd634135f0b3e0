"""The reference inputs every engine is measured on, prepared once by the fp32 engine's runtime.

Tower feeds come from real media through the fp32 pipeline's own preprocessing (Pipeline.prepare:
frames, mel chunks, image tiles); the image projector gets the fp32 vision features of the image.
Each tower stage of every variant gets these fp32 inputs, so its numbers are that stage's own
error, not the towers' errors compounded. The decoder gets consecutive windows of real text,
compared position by position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vinci_edge import stages as st
from vinci_edge.errors import MediaError
from vinci_edge.progress import Progress
from vinci_edge.quantization.accuracy.settings import AccuracySettings, read_text

TOWERS = (st.VISION, st.AUDIO, st.IMAGE_PROJECTOR)
FRAME_BATCH = 8  # as the runtime's MediaEncoders
CHUNK_BATCH = 4


@dataclass
class Inputs:
    """Stage feeds (lists of ONNX feeds per tower stage) and the token windows."""

    towers: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)
    described: dict[str, str] = field(default_factory=dict)  # stage -> what the feeds are
    windows: list[list[int]] = field(default_factory=list)

    @property
    def targets(self) -> np.ndarray:
        """The predicted tokens, in the order of the logits rows: each window but its first token."""
        return np.concatenate([np.asarray(w[1:]) for w in self.windows])


def prepare_inputs(pipe, settings: AccuracySettings, say: Progress) -> Inputs:
    """Tower feeds from real media through the fp32 pipeline's own preprocessing."""
    from vinci_edge import metrics as m
    from vinci_edge.request.s2_merge import merge_image_features

    out = Inputs()
    stages = pipe.engine.stages
    if st.VISION in stages and settings.video is not None:
        req = pipe.prepare("x", metrics=m.Metrics(), video=settings.video, num_frames=settings.num_frames)
        frames = req.frames
        out.towers[st.VISION] = _batches("pixel_values", frames, FRAME_BATCH)
        out.described[st.VISION] = f"{frames.shape[0]} frames of {Path(settings.video).name}"
        say(f"inputs: {out.described['vision']}")
    if st.AUDIO in stages and pipe.cfg.has_sound:
        # The clip's soundtrack (what a video request feeds the audio stage) and the audio file.
        chunks, names = [], []
        for kind, src in (("video", settings.video), ("audio", settings.audio)):
            if src is None:
                continue
            req = pipe.prepare("x", metrics=m.Metrics(), **{kind: src}, num_frames=settings.num_frames)
            if req.mel_chunks is not None:
                chunks.append(req.mel_chunks)
                names.append(f"{req.mel_chunks.shape[0]} of {Path(src).name}")
        if chunks:
            out.towers[st.AUDIO] = _batches("mel", np.concatenate(chunks), CHUNK_BATCH)
            out.described[st.AUDIO] = f"mel chunks: {' + '.join(names)}"
            say(f"inputs: {out.described['audio']}")
    if st.IMAGE_PROJECTOR in stages and st.VISION in stages and settings.image is not None:
        req = pipe.prepare("x", metrics=m.Metrics(), image=settings.image)
        im = req.images[0]
        if im.block_size is not None:  # dynamic S2: the projector sees merged fp32 vision features
            vision = pipe.runner(st.VISION)
            feats = np.concatenate(
                [
                    vision.run({"pixel_values": im.pixels[i : i + FRAME_BATCH]}, ["features"])["features"]
                    for i in range(0, im.pixels.shape[0], FRAME_BATCH)
                ]
            )
            blocks, _ = merge_image_features(
                feats, pipe.cfg.s2_scales, im.block_size, pipe.cfg.s2_resize_output_to_scale_idx
            )
            out.towers[st.IMAGE_PROJECTOR] = [{"features": blocks}]
            out.described[st.IMAGE_PROJECTOR] = (
                f"{blocks.shape[0]} S2 blocks of {Path(settings.image).name} (fp32 vision features)"
            )
            say(f"inputs: {out.described['image_projector']}")
    if settings.decoder and st.DECODER in stages:
        text = read_text(Path(settings.text))
        out.windows = text_windows(
            pipe.tokenizer, text, settings.text_tokens, settings.text_windows, settings.text_offset
        )
        out.described[st.DECODER] = (
            f"{len(out.windows)} x {settings.text_tokens} tokens of {Path(settings.text).name}"
            f" from token {settings.text_offset}"
        )
    return out


def text_windows(tokenizer, text: str, n: int, count: int, offset: int) -> list[list[int]]:
    """`count` consecutive windows of n tokens from token `offset` on."""
    ids = tokenizer.encode(text)
    need = offset + n * count
    if len(ids) < need:
        raise MediaError(
            f"the text has {len(ids)} tokens; {count} windows of {n} from {offset} need {need}",
            hint="pass a longer --text or fewer / smaller windows (--windows, --tokens, --text-offset)",
        )
    return [ids[offset + k * n : offset + (k + 1) * n] for k in range(count)]


def _batches(name: str, x: np.ndarray, batch: int) -> list[dict[str, np.ndarray]]:
    return [{name: x[i : i + batch]} for i in range(0, x.shape[0], batch)]
