"""The media a model takes, one modality object each, in the order their placeholders take in a
prompt (image, video, audio: as the official prompt writes them)."""

from __future__ import annotations

from vinci_edge.config import OmniVinciConfig
from vinci_edge.kinds import Kind
from vinci_edge.request.audio import Audio
from vinci_edge.request.image import Image
from vinci_edge.request.modality import Modality
from vinci_edge.request.video import Video


def modalities_for(cfg: OmniVinciConfig) -> dict[Kind, Modality]:
    return {m.kind: m for m in (Image(cfg), Video(cfg), Audio(cfg))}
