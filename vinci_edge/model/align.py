"""OmniAlignNet: contrastive vision-audio alignment. A training utility, not on the inference path
(the released inference code has no module or weights for it).

Per the paper: a learnable query per modality (1 x C) attends over that modality's projected
sequence, three self-attention layers follow, the query's output is L2-normalised. The loss is the
symmetric CLIP loss with s_ij = V_i . A_j:  L = (L_{v->a} + L_{a->v}) / 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Branch(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True, activation="gelu"
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, seq: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, C) -> (B, C), unit length. `pad_mask` (B, L) is True where a position is padding."""
        b = seq.shape[0]
        x = torch.cat([self.query.expand(b, -1, -1), seq], dim=1)
        if pad_mask is not None:
            pad_mask = torch.cat([pad_mask.new_zeros(b, 1), pad_mask], dim=1)
        x = self.encoder(x, src_key_padding_mask=pad_mask)
        return F.normalize(self.norm(x[:, 0]), dim=-1)


class OmniAlignNet(nn.Module):
    def __init__(self, dim: int, heads: int = 8, layers: int = 3, temperature: float = 1.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.vision = _Branch(dim, heads, layers)
        self.audio = _Branch(dim, heads, layers)
        self.temperature = temperature

    def forward(
        self,
        vision: torch.Tensor,
        audio: torch.Tensor,
        vision_pad: torch.Tensor | None = None,
        audio_pad: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vision(vision, vision_pad), self.audio(audio, audio_pad)

    def loss(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return symmetric_contrastive_loss(v, a, self.temperature)


def symmetric_contrastive_loss(v: torch.Tensor, a: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(L_{v->a} + L_{a->v}) / 2 with s_ij = V_i . A_j / temperature; pair i is sample i of both."""
    s = v @ a.t() / temperature
    target = torch.arange(s.shape[0], device=s.device)
    return (F.cross_entropy(s, target) + F.cross_entropy(s.t(), target)) / 2
