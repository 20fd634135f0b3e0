"""The PyTorch reference OmniVinci: towers, projectors, the LLM, stitching by the plan, generation.

Each `encode_*` method is exactly what one exported stage computes, so export parity tests compare
stage against stage. The stitch (TEG gather + CRTE) follows the shared plan (`vinci_edge.plan`) and
rotates in float64, as the official code does.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache

from vinci_edge import crte
from vinci_edge.config import OmniVinciConfig
from vinci_edge.kinds import Kind
from vinci_edge.model import crte_op
from vinci_edge.model.audio import SoundProjector, SoundTower
from vinci_edge.model.crte_torch import rotate
from vinci_edge.model.vision import (
    MMProjector,
    VisionTower,
    merge_chessboard,
    merge_s2_features,
    repeat_scales,
    split_chessboard,
)
from vinci_edge.plan import Plan


def llm_config(llm: dict):
    """The transformers config of the LLM component."""
    d = dict(llm)
    model_type = d.pop("model_type", "qwen2")
    for k in ("architectures", "torch_dtype", "_name_or_path", "transformers_version"):
        d.pop(k, None)
    hf = AutoConfig.for_model(model_type, **d)
    hf._attn_implementation = "sdpa"
    return hf


def build_llm(cfg: OmniVinciConfig) -> nn.Module:
    """Any transformers causal LM named by the llm config (Qwen2, Llama, ...)."""
    return AutoModelForCausalLM.from_config(llm_config(cfg.llm), dtype=torch.float32)


class OmniVinciModel(nn.Module):
    def __init__(self, cfg: OmniVinciConfig, with_llm: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        # The towers alone are enough to export the vision and audio stages (the 9B LLM is not).
        self.llm = build_llm(cfg) if with_llm else None
        self.vision_tower = VisionTower(cfg)
        self.mm_projector = MMProjector(cfg)
        if cfg.has_sound:
            self.sound_tower = SoundTower(cfg)
            self.sound_mm_projector = SoundProjector(cfg)
        self.use_native_stitch = False
        self.tables = crte.rotation_tables(cfg)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.mm_projector.parameters()).dtype

    # ---- stages -----------------------------------------------------------------------------------
    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """Video frames (N, 3, s, s) -> projected tokens (N, T_v, D): the vision stage."""
        feats = self.vision_tower(pixels.to(self.dtype))
        return self.mm_projector(repeat_scales(feats, len(self.cfg.s2_scales)))

    def encode_audio(self, mel_chunks: torch.Tensor) -> torch.Tensor:
        """Mel chunks (C, n_mels, 3000) -> projected tokens (C, T_a, D): the audio stage."""
        return self.sound_mm_projector(self.sound_tower(mel_chunks.to(self.dtype)))

    def encode_image(self, pixels: torch.Tensor, block_size: tuple[int, int] | None) -> torch.Tensor:
        """An image's tiles -> its tokens (T, D), dynamic S2 (or one tile when block_size is None)."""
        feats = self.vision_tower(pixels.to(self.dtype))
        scales = self.cfg.s2_scales
        if block_size is None:
            return self.mm_projector(repeat_scales(feats, len(scales)))[0]
        merged, (rows, cols) = merge_s2_features(
            feats, scales, block_size, self.cfg.s2_resize_output_to_scale_idx
        )
        blocks = split_chessboard(merged, rows, cols)  # (rows*cols, C, h, w)
        tokens = self.mm_projector(blocks.flatten(2).transpose(1, 2))
        return merge_chessboard(tokens, rows, cols).flatten(2).transpose(1, 2)[0]

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids)

    # ---- stitch -----------------------------------------------------------------------------------
    def stitch(self, plan: Plan, banks: dict[Kind, torch.Tensor]) -> torch.Tensor:
        """inputs_embeds (S, D): text embeddings and bank rows placed by the plan, media rotated by
        CRTE in float64 (the reference precision), cast back to the model dtype.

        With `use_native_stitch` the fused C++/CUDA kernel does it through the torch custom op
        (`vinci_edge.model.crte_op`); by default the reference keeps its own torch arithmetic, so
        it stays an independent check of the kernel."""
        if self.use_native_stitch:
            return crte_op.stitch(
                plan, self.llm.get_input_embeddings().weight, banks, self.tables, self.dtype
            )
        d = self.cfg.hidden_size
        out = torch.empty(len(plan), d, dtype=self.dtype)
        kind = torch.from_numpy(plan.kind.astype(np.int64))
        src = torch.from_numpy(plan.src)
        text = kind == Kind.TEXT
        out[text] = self.embed_tokens(src[text]).to(self.dtype)
        for k in (Kind.VIDEO, Kind.AUDIO, Kind.IMAGE):
            sel = kind == k
            if not bool(sel.any()):
                continue
            x = banks[k][src[sel]].to(torch.float64)
            table = self.tables[k]
            if table is not None:
                idx = sel.numpy()
                x = rotate(x, table, plan.scale[idx], plan.a[idx], plan.b[idx])
            out[sel] = x.to(self.dtype)
        return out

    # ---- LLM ----------------------------------------------------------------------------------------
    def prefill(self, inputs_embeds: torch.Tensor) -> tuple[torch.Tensor, DynamicCache]:
        cache = DynamicCache()
        out = self.llm(
            inputs_embeds=inputs_embeds[None], past_key_values=cache, use_cache=True, logits_to_keep=1
        )
        return out.logits[0, -1].float(), out.past_key_values

    def step(self, token: int, cache: DynamicCache) -> torch.Tensor:
        out = self.llm(input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True)
        return out.logits[0, -1].float()
