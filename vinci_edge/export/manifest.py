"""manifest.json: the only contract between export and runtime.

It records the schema version, the whole model config, every stage's file and I/O (names, shapes,
dtypes), precision, opset, the CRTE and TEG parameters, the source checkpoint's fingerprint and the
exporter versions. The runtime reads nothing else about the model, and refuses what it cannot honour.
Torch-free: the runtime imports this module.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from vinci_edge.config import OmniVinciConfig

SCHEMA_VERSION = 1
FORMAT = "vinci-edge-engine"
MANIFEST = "manifest.json"
STAGE_NAMES = ("vision", "image_projector", "audio", "decoder")


def model_id(model_config: dict[str, Any]) -> str:
    """A stable hash of the model config: two engines with the same id are the same model."""
    blob = json.dumps(model_config, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def timeline_params(cfg: OmniVinciConfig) -> dict[str, Any]:
    """TEG and CRTE settings, written out for people and tools (the runtime derives them from the
    model config, so they can never disagree with it)."""
    return {
        "teg": {
            "load_audio_in_video": cfg.load_audio_in_video,
            "interleaved": cfg.interleaved_vis_aud_in_video,
            "segment_duration": cfg.segment_duration,
            "num_video_frames": cfg.num_video_frames,
            "audio_sampling_rate": cfg.audio_sampling_rate,
            "audio_hop_length": cfg.audio_hop_length,
            "audio_chunk_length": cfg.audio_chunk_length,
            "tokens_per_frame": cfg.tokens_per_frame,
            "audio_tokens_per_chunk": cfg.audio_tokens_per_chunk,
        },
        "crte": {
            "video": cfg.video_encoder.time.to_dict() if cfg.video_encoder.time else None,
            "audio": cfg.sound_encoder.time.to_dict() if cfg.sound_encoder.time else None,
        },
    }


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
