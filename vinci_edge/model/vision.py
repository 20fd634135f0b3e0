"""Vision side of the reference: SigLIP tower, the mlp_downsample projector, S2 feature handling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

from vinci_edge.config import OmniVinciConfig


def vision_config(cfg: OmniVinciConfig) -> SiglipVisionConfig:
    d = {k: v for k, v in cfg.vision.items() if k not in ("architectures", "model_type", "torch_dtype")}
    return SiglipVisionConfig(**d)


class VisionTower(nn.Module):
    """SigLIP; the feature is the hidden state of `mm_vision_select_layer` (-2), all patch tokens."""

    def __init__(self, cfg: OmniVinciConfig) -> None:
        super().__init__()
        hf_cfg = vision_config(cfg)
        hf_cfg._attn_implementation = "eager"
        self.vision_tower = SiglipVisionModel(hf_cfg)
        self.select_layer = cfg.mm_vision_select_layer
        if cfg.mm_vision_select_feature not in ("cls_patch", "patch"):
            raise ValueError(f"unknown mm_vision_select_feature {cfg.mm_vision_select_feature!r}")
        # SigLIP has no CLS token; "patch" would drop the first patch, as the official code does.
        self.drop_first = cfg.mm_vision_select_feature == "patch"

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.vision_tower(pixels, output_hidden_states=True)
        feats = out.hidden_states[self.select_layer]
        return feats[:, 1:] if self.drop_first else feats


def fold_2x2(x: torch.Tensor) -> torch.Tensor:
    """Space-to-channel 2x2 fold of a square token grid (N, h*w, C) -> (N, ceil(h/2)*ceil(w/2), 4C),
    zero-padding odd sides, in the official channel order."""
    n, t, c = x.shape
    side = int(round(t**0.5))
    x = x.reshape(n, side, side, c)
    if side % 2:
        x = torch.cat([x, x.new_zeros(n, 1, side, c)], dim=1)
        x = torch.cat([x, x.new_zeros(n, side + 1, 1, c)], dim=2)
    n, w, h, c = x.shape
    x = x.reshape(n, w, h // 2, c * 2).permute(0, 2, 1, 3)
    x = x.reshape(n, h // 2, w // 2, c * 4).permute(0, 2, 1, 3)
    return x.reshape(n, -1, c * 4)


class DownSample(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fold_2x2(x)


class MMProjector(nn.Module):
    """mlp_downsample: fold 2x2 -> LayerNorm(4C) -> Linear(4C, D) -> GELU -> Linear(D, D).
    Keys `layers.1` (LN), `layers.2`, `layers.4`, as in the checkpoint."""

    def __init__(self, cfg: OmniVinciConfig) -> None:
        super().__init__()
        c4, d = cfg.mm_hidden_size * 4, cfg.hidden_size
        self.layers = nn.Sequential(
            DownSample(), nn.LayerNorm(c4), nn.Linear(c4, d), nn.GELU(), nn.Linear(d, d)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def repeat_scales(feats: torch.Tensor, n_scales: int) -> torch.Tensor:
    """Video frames are not tiled: the single-scale feature is repeated once per S2 scale along
    channels (the official merge for block size None)."""
    return feats.repeat(1, 1, n_scales)


# ---- images: dynamic S2 ---------------------------------------------------------------------------


def _grid(x: torch.Tensor) -> torch.Tensor:
    """(B, h*w, C) -> (B, C, h, w)."""
    b, t, c = x.shape
    side = int(round(t**0.5))
    return x.transpose(1, 2).reshape(b, c, side, side)


def merge_chessboard(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """rows*cols tiles (B*rows*cols, C, h, w) or (.., h*w, C) -> (B, C, rows*h, cols*w)."""
    if x.dim() == 3:
        x = _grid(x)
    b = x.shape[0] // (rows * cols)
    return torch.cat(
        [
            torch.cat([x[(i * cols + j) * b : (i * cols + j + 1) * b] for j in range(cols)], dim=-1)
            for i in range(rows)
        ],
        dim=-2,
    )


def split_chessboard(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    b, c, h, w = x.shape
    hh, ww = h // rows, w // cols
    return torch.cat(
        [x[:, :, i * hh : (i + 1) * hh, j * ww : (j + 1) * ww] for i in range(rows) for j in range(cols)],
        dim=0,
    )


def merge_s2_features(
    feats: torch.Tensor, scales: list[int], block_size: tuple[int, int], resize_idx: int
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Official `merge_features_for_dynamic_s2` for one image: tower features of all its tiles
    (fixed scales first, then the aspect-ratio tiling) -> one (1, C*n_scales, H, W) map at the
    output scale, plus the block size it is split into for the projector."""
    per_scale = []
    cursor = 0
    for scale in scales[:-1]:
        k = scale // scales[0]
        per_scale.append(merge_chessboard(feats[cursor : cursor + k * k], k, k))
        cursor += k * k
    rows, cols = block_size
    per_scale.append(merge_chessboard(feats[cursor : cursor + rows * cols], rows, cols))
    cursor += rows * cols
    assert cursor == feats.shape[0], "tile count does not match the S2 layout"
    size = per_scale[resize_idx].shape[-2:]
    merged = torch.cat(
        [F.interpolate(m.float(), size=size, mode="area").to(m.dtype) for m in per_scale], dim=1
    )
    if resize_idx in (-1, len(scales) - 1):
        out_blocks = (rows, cols)
    else:
        k = scales[resize_idx] // scales[0]
        out_blocks = (k, k)
    return merged, out_blocks
