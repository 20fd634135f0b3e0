"""The checkpoint folder layout (real `nvidia/omnivinci`): config files only, torch-free, so configs
can be written without weights (e.g. the 9B preset on a small machine)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vinci_edge.config import OmniVinciConfig


def write_configs(out: Path, cfg: OmniVinciConfig) -> None:
    """Root and component config.json files, plus the preprocessor configs the real layout has."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.root, indent=2) + "\n")
    comps = {
        "llm": cfg.llm,
        "vision_tower": cfg.vision,
        "mm_projector": cfg.mm_projector,
        "sound_tower": sound_tower_file_config(cfg.sound_tower),
        "sound_mm_projector": cfg.sound_mm_projector,
    }
    for name, c in comps.items():
        if c is None:
            continue
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "config.json").write_text(json.dumps(c, indent=2) + "\n")
    size = cfg.s2_scales[0]
    (out / "vision_tower" / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "SiglipImageProcessor",
                "do_resize": True,
                "size": {"height": size, "width": size},
                "resample": 3,
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
            },
            indent=2,
        )
        + "\n"
    )
    if cfg.has_sound:
        (out / "preprocessor_config.json").write_text(
            json.dumps(
                {
                    "feature_extractor_type": "WhisperFeatureExtractor",
                    "feature_size": cfg.num_mel_bins,
                    "sampling_rate": cfg.audio_sampling_rate,
                    "hop_length": cfg.audio_hop_length,
                    "chunk_length": 30,
                    "n_fft": 400,
                    "padding_value": 0.0,
                },
                indent=2,
            )
            + "\n"
        )


def sound_tower_file_config(enc: dict[str, Any] | None) -> dict[str, Any] | None:
    if enc is None:
        return None
    return {
        "architectures": ["Qwen2AudioForConditionalGeneration"],
        "model_type": "qwen2_audio",
        "audio_config": enc,
    }
