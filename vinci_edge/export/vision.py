"""Vision stage exporters: video frames / image tiles -> tokens, and the image projector alone.

    vision.onnx            pixel_values (N, 3, s, s) -> tokens (N, T_v, D)     = model.encode_frames
                                                     features (N, P, C)      SigLIP select-layer feature
    image_projector.onnx   features (B, P, C * n_scales) -> tokens (B, T, D) = mm_projector

Video frames use `tokens`; images with dynamic S2 use `features`, merged across scales and tiles by
`vinci_edge.request.s2_merge`, then the image projector. One vision graph serves both, so the tower
weights are loaded once.

The graph holds only what the feature needs: SigLIP's feature is `hidden_states[select_layer]`
(-2), so the last encoder layer, the post-layernorm and the attention-pooling head do not reach the
reference's output and are left out of the graph (for the 9B tower: 1 of 27 layers plus the head,
30M of its 429M weights).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vinci_edge import stages as st
from vinci_edge.errors import ConfigError
from vinci_edge.export.stage_spec import export_stage
from vinci_edge.model.omnivinci import OmniVinciModel
from vinci_edge.model.vision import repeat_scales
from vinci_edge.progress import Progress, silent


def kept_layers(num_layers: int, select_layer: int) -> int:
    """Encoder layers needed for `hidden_states[select_layer]`.

    transformers' SigLIP hidden_states has num_layers + 1 entries: the embedding output, then each
    layer's output (the last one before post_layernorm), so entry i is the output of i layers.
    """
    n = select_layer if select_layer >= 0 else num_layers + 1 + select_layer
    if not 0 <= n <= num_layers:
        raise ConfigError(
            f"mm_vision_select_layer {select_layer} is outside a {num_layers}-layer vision tower",
            hint="the select layer indexes the tower's hidden states, -(layers + 1) .. layers",
        )
    return n


class VisionStage(nn.Module):
    """Embeddings + the kept encoder layers -> (projected tokens, select-layer feature).

    It reuses the reference's own modules (no weights are copied), so it computes exactly
    `VisionTower.forward` and `encode_frames`, minus the layers whose output is discarded.
    """

    def __init__(self, model: OmniVinciModel) -> None:
        super().__init__()
        tower = model.vision_tower
        vit = tower.vision_tower.vision_model
        self.num_layers = len(vit.encoder.layers)
        n = kept_layers(self.num_layers, tower.select_layer)
        self.embeddings = vit.embeddings
        self.layers = nn.ModuleList(list(vit.encoder.layers)[:n])
        self.drop_first = tower.drop_first
        self.projector = model.mm_projector
        self.n_scales = len(model.cfg.s2_scales)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embeddings(pixel_values)
        for layer in self.layers:
            h = layer(h, None)  # no attention mask: every tile has all its patches
        feats = h[:, 1:] if self.drop_first else h
        return self.projector(repeat_scales(feats, self.n_scales)), feats


def tile_patches(model: OmniVinciModel) -> int:
    """P: feature tokens of one tile (SigLIP has no CLS token)."""
    vit = model.vision_tower.vision_tower.vision_model
    return vit.embeddings.num_patches - int(model.vision_tower.drop_first)


def export_vision(
    model: OmniVinciModel,
    out_path: Path,
    dtype: str = "float32",
    progress: Progress | None = None,
    external_data: bool | None = None,
    props: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write vision.onnx (frames axis dynamic) and return its manifest entry."""
    say = progress or silent
    stage = VisionStage(model)
    say(
        f"vision: SigLIP embeddings + {len(stage.layers)} of {stage.num_layers} layers "
        f"(select layer {model.vision_tower.select_layer}) + mm_projector"
    )
    s = model.cfg.image_size
    return export_stage(
        stage,
        torch.zeros(2, 3, s, s),
        Path(out_path),
        stage=st.VISION,
        input_name="pixel_values",
        output_names=("tokens", "features"),
        batch_dim="frames",
        dtype=dtype,
        external_data=external_data,
        progress=say,
        props=props,
    )


def export_image_projector(
    model: OmniVinciModel,
    out_path: Path,
    dtype: str = "float32",
    progress: Progress | None = None,
    external_data: bool | None = None,
    props: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write image_projector.onnx (blocks axis dynamic): S2-merged features -> tokens."""
    example = torch.zeros(2, tile_patches(model), model.cfg.mm_hidden_size)
    return export_stage(
        model.mm_projector,
        example,
        Path(out_path),
        stage=st.IMAGE_PROJECTOR,
        input_name="features",
        output_names=("tokens",),
        batch_dim="blocks",
        dtype=dtype,
        external_data=external_data,
        progress=progress,
        props=props,
    )
