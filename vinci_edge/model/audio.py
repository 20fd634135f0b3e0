"""Audio side of the reference: the Qwen2-Audio (Whisper-style) encoder and the sound projector."""

from __future__ import annotations

import torch
from torch import nn
from transformers import Qwen2AudioEncoder, Qwen2AudioEncoderConfig

from vinci_edge.config import OmniVinciConfig


def audio_config(cfg: OmniVinciConfig) -> Qwen2AudioEncoderConfig:
    d = {k: v for k, v in cfg.sound_tower.items() if k not in ("architectures", "model_type", "torch_dtype")}
    return Qwen2AudioEncoderConfig(**d)


class SoundTower(nn.Module):
    """Per 3000-frame mel chunk: conv1, conv2 (stride 2) -> 1500 frames + learned positions ->
    transformer layers -> average pool 2 -> 750 tokens -> LayerNorm. Keys as `sound_tower/`."""

    def __init__(self, cfg: OmniVinciConfig) -> None:
        super().__init__()
        hf_cfg = audio_config(cfg)
        hf_cfg._attn_implementation = "eager"
        self.audio_tower = Qwen2AudioEncoder(hf_cfg)

    def forward(self, mel_chunks: torch.Tensor) -> torch.Tensor:
        """(C, n_mels, 3000) -> (C, 750, width)."""
        return self.audio_tower(mel_chunks).last_hidden_state


class SoundProjector(nn.Module):
    """mlp: Linear(width, D) -> GELU -> Linear(D, D); keys `layers.0`, `layers.2`."""

    def __init__(self, cfg: OmniVinciConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.layers = nn.Sequential(nn.Linear(cfg.sound_width, d), nn.GELU(), nn.Linear(d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
