"""Audio stage exporter: 30 s log-mel chunks -> projected audio tokens.

    audio.onnx   mel (C, n_mels, 3000) -> tokens (C, 750, D)   = model.encode_audio

The Qwen2-Audio encoder is fixed to 3000-frame chunks by its learned positions, so only the chunk
axis is dynamic.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vinci_edge import stages as st
from vinci_edge.config import AUDIO_CHUNK_FRAMES
from vinci_edge.errors import ConfigError
from vinci_edge.export.stage_spec import export_stage
from vinci_edge.model.omnivinci import OmniVinciModel
from vinci_edge.progress import Progress, silent


class AudioStage(nn.Module):
    """Sound tower + sound projector: exactly `encode_audio`, on the reference's own modules."""

    def __init__(self, model: OmniVinciModel) -> None:
        super().__init__()
        self.tower = model.sound_tower
        self.projector = model.sound_mm_projector

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.projector(self.tower(mel))


def export_audio(
    model: OmniVinciModel,
    out_path: Path,
    dtype: str = "float32",
    progress: Progress | None = None,
    external_data: bool | None = None,
    props: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write audio.onnx (chunks axis dynamic) and return its manifest entry."""
    if not model.cfg.has_sound:
        raise ConfigError("the checkpoint has no sound tower; there is no audio stage to export")
    say = progress or silent
    layers = len(model.sound_tower.audio_tower.layers)
    say(f"audio: Qwen2-Audio encoder ({layers} layers) + sound projector")
    return export_stage(
        AudioStage(model),
        torch.zeros(2, model.cfg.num_mel_bins, AUDIO_CHUNK_FRAMES),
        Path(out_path),
        stage=st.AUDIO,
        input_name="mel",
        output_names=("tokens",),
        batch_dim="chunks",
        dtype=dtype,
        external_data=external_data,
        progress=say,
        props=props,
    )
