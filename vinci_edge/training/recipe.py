"""The training recipe and its ablations.

One recipe trains the shipped checkpoint; an ablation is the same recipe with one of the paper's
three ideas taken out, expressed in the checkpoint's own config so that the exported engine and the
runtime follow it too:

    no-align  OmniAlignNet's contrastive loss off (it is a training loss only)
    no-teg    video and audio not interleaved by time (`interleaved_vis_aud_in_video: false`: the
              official non-TEG layout, the whole audio track, then all the frames)
    no-crte   no time rotation (`embed_time: "False"` for the video and the sound encoder)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from vinci_edge.config import OmniVinciConfig, build_config
from vinci_edge.presets import preset_components

ABLATIONS = ("none", "no-align", "no-teg", "no-crte")
QUESTION_SAMPLING = ("by-error", "by-category")  # training.curriculum
PRESET = "avtask"


@dataclass(frozen=True)
class Recipe:
    steps: int = 3500  # the joint phase
    clips_per_step: int = 4
    questions_per_clip: int = 16
    lr: float = 1.5e-3
    min_lr_fraction: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    align_weight: float = 0.2  # OmniAlignNet's loss, added to the LM loss
    align_layers: int = 3  # per the paper: three self-attention layers per branch
    align_temperature: float = 0.07
    probe_weight: float = 1.0  # the media probe's loss (loop.MediaProbe), training only
    dense_probe: bool = True  # the probe also per video row (its cell) and per audio row
    tower_steps: int = 1500  # steps of the probe's loss alone on the towers, before the joint steps
    question_sampling: str = "by-error"  # templates drawn by their running error, or categories uniformly
    seed: int = 0
    ablation: str = "none"

    def __post_init__(self) -> None:
        if self.ablation not in ABLATIONS:
            raise ValueError(f"unknown ablation {self.ablation!r}; choose one of {', '.join(ABLATIONS)}")
        if self.question_sampling not in QUESTION_SAMPLING:
            choices = ", ".join(QUESTION_SAMPLING)
            raise ValueError(f"unknown question sampling {self.question_sampling!r}; choose one of {choices}")
        if self.tower_steps < 0 or (self.tower_steps and self.probe_weight <= 0):
            raise ValueError("a towers' phase needs the media probe (probe_weight > 0) and tower_steps >= 0")

    @property
    def total_steps(self) -> int:
        """The towers' phase and the joint phase."""
        return self.tower_steps + self.steps

    @property
    def uses_align(self) -> bool:
        return self.ablation != "no-align" and self.align_weight > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recipe_components(recipe: Recipe, vocab_size: int) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The checkpoint's root config and component configs for a recipe (the ablation applied)."""
    root, comps = preset_components(PRESET)
    comps["llm"]["vocab_size"] = max(int(comps["llm"]["vocab_size"]), vocab_size)
    if recipe.ablation == "no-teg":
        root["interleaved_vis_aud_in_video"] = False
    if recipe.ablation == "no-crte":
        for key in ("video_encoder", "sound_encoder"):
            enc = json.loads(root[key])
            enc["embed_time"] = "False"
            root[key] = json.dumps(enc)
    return root, comps


def recipe_config(recipe: Recipe, vocab_size: int) -> OmniVinciConfig:
    return build_config(*recipe_components(recipe, vocab_size))
