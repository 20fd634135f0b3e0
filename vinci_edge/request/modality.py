"""One modality object per medium: how a source becomes chunks, and how a chunk becomes encoder rows.

    preprocess(source, context, metrics) -> Preprocessed   decode + preprocess, torch-free
    encode(chunk, stages, metrics)       -> (rows, D)       the chunk's rows of its kind's bank

`encode` runs the stage graphs through `vinci_edge.stages.Stages`, so the same object serves the
runtime (ONNX Runtime sessions) and the PyTorch reference (its modules). Adding a medium is one file
with one such class, listed in `vinci_edge.request.modalities`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vinci_edge import metrics as m
from vinci_edge import tokens
from vinci_edge.kinds import Kind
from vinci_edge.request.chunks import MediaChunk, VideoChunk
from vinci_edge.stages import Stages


@dataclass(frozen=True)
class Context:
    """What preprocessing needs besides the source and the model config: the fingerprint of the
    model's encoders (for content ids) and the request's options."""

    encoders: str = ""  # fingerprint of the model's encoders (manifest or checkpoint)
    num_frames: int | None = None  # video frames to sample; None = the model's num_video_frames

    def encoder_fingerprint(self, kind: Kind) -> str:
        return hashlib.sha256(f"{self.encoders}:{kind.label}".encode()).hexdigest()[:16]


@dataclass
class Preprocessed:
    """One source, ready for the prompt: its chunks in placeholder order."""

    chunks: list[MediaChunk]
    info: dict[str, Any]  # what the `--json` answer says about it (path, frames, seconds, ...)
    warnings: list[str] = field(default_factory=list)


class Modality(Protocol):
    """Made for one model: `Video(cfg)`."""

    kind: Kind
    noun: str  # "a video": what a request holding this medium has
    stages: tuple[str, ...]  # the engine stages `encode` runs

    def preprocess(self, source: Path, ctx: Context, metrics: m.Metrics) -> Preprocessed: ...

    def encode(self, chunk: MediaChunk, stages: Stages, metrics: m.Metrics) -> np.ndarray: ...


def placeholders(chunk: MediaChunk) -> str:
    """The chunk's media placeholders in the prompt text: a video with its own (TEG-interleaved)
    audio is written `<sound><vila/video>`, as the official prompt does."""
    return "".join(tokens.MEDIA_TOKENS[k] for k in markers(chunk))


def markers(chunk: MediaChunk) -> tuple[Kind, ...]:
    """The placeholder kinds a chunk answers to, in order."""
    if isinstance(chunk, VideoChunk) and chunk.track is not None:
        return (Kind.AUDIO, Kind.VIDEO)
    return (chunk.kind,)
