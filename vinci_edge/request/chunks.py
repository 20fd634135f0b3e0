"""The prompt as a list of chunks (llama.cpp's multimodal library is the model).

A chunk is one unit of the prompt: a run of text token ids, or one medium's preprocessed input - a
group of video frames with their times, a window of audio (its log-mel) with its time range, an
image's tiles. A media chunk is what an encoder runs on: it is encoded once, its rows are cached
under its content id, stitched (TEG + CRTE) by the plan and appended to the KV cache.

The content id is a hash of where the chunk came from (the source's identity: a file's resolved
path, size and modification time, or a live stream's name), which part of it (frame indices, sample
range, tiling), how it was preprocessed, and the fingerprint of the encoder that will run on it (from
the engine's manifest, or the checkpoint for the reference): the same id means the same encoder rows.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vinci_edge.kinds import Kind
from vinci_edge.plan import AudioItem, ImageItem, TextItem, VideoItem
from vinci_edge.timeline import AudioTimeline, VideoTimeline


def source_identity(path: str | os.PathLike[str]) -> str:
    """A file's identity for content ids: resolved path, size and modification time, so an edited
    file gets new ids while the same file asked about twice keeps them."""
    p = Path(path).resolve()
    st = p.stat()
    return f"{p}:{st.st_size}:{st.st_mtime_ns}"


def content_id(kind: Kind, source: str, extent: Any, encoder: str) -> str:
    """The hash of a media chunk's content: its kind, source identity, extent (which part of the
    source, as JSON-able values) and the encoder fingerprint."""
    blob = json.dumps([kind.label, source, extent, encoder], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


@dataclass(frozen=True, eq=False)
class TextChunk:
    ids: tuple[int, ...]
    kind: ClassVar[Kind] = Kind.TEXT

    def item(self) -> TextItem:
        return TextItem(self.ids)


@dataclass(frozen=True, eq=False)
class VideoChunk:
    """Frames of one video, preprocessed, with their source indices and times."""

    id: str
    source: str  # what to call it in messages (a path)
    pixels: np.ndarray  # (F, 3, s, s) float32
    timeline: VideoTimeline
    track: AudioChunk | None = None  # its own audio, TEG-interleaved with it
    kind: ClassVar[Kind] = Kind.VIDEO

    def item(self) -> VideoItem:
        return VideoItem(self.timeline, self.track.timeline if self.track else None)


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """A window of audio as the encoder takes it: log-mel windows of 3000 STFT frames (30 s)."""

    id: str
    source: str
    mel: np.ndarray  # (C, n_mels, 3000) float32
    timeline: AudioTimeline
    kind: ClassVar[Kind] = Kind.AUDIO

    def item(self) -> AudioItem:
        return AudioItem(self.timeline)


@dataclass(frozen=True, eq=False)
class ImageChunk:
    """An image's tiles: one tile, or the dynamic-S2 tiling."""

    id: str
    source: str
    pixels: np.ndarray  # (tiles, 3, s, s) float32
    block_size: tuple[int, int] | None  # (rows, cols) of the last S2 scale; None = one tile
    n_tokens: int  # encoder rows the image contributes
    kind: ClassVar[Kind] = Kind.IMAGE

    def item(self) -> ImageItem:
        return ImageItem(self.n_tokens)


MediaChunk = VideoChunk | AudioChunk | ImageChunk
Chunk = TextChunk | MediaChunk


def encoded_chunks(chunks: list[Chunk]) -> list[MediaChunk]:
    """Every chunk an encoder runs on, in prompt order (a video's own track right after it)."""
    out: list[MediaChunk] = []
    for c in chunks:
        if isinstance(c, TextChunk):
            continue
        out.append(c)
        if isinstance(c, VideoChunk) and c.track is not None:
            out.append(c.track)
    return out
