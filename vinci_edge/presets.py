"""Presets: configs in exactly the layout of the real `nvidia/omnivinci` checkpoint.

- `omnivinci-9b`: the real shapes (Qwen2.5-7B LLM, SigLIP so400m at 448 px, Qwen2-Audio encoder).
  For export on large machines; `init-checkpoint --config-only` writes its configs without 17 GB of
  random weights.
- `nano` (~0.6B): a Qwen2.5-0.5B-shaped LLM, a SigLIP-base-sized tower at 224 px and a
  Whisper-base-sized audio tower. The CPU benchmark model.
- `tiny`: runs in well under a second; for tests.
- `avtask` (~1.6M): the model trained from scratch on the synthetic audio-visual task
  (`vinci_edge.avtask`, `vinci-edge train`): SigLIP at 64 px with 8 px patches (16 tokens a frame),
  a two-layer Whisper-style audio tower, a four-layer Qwen2 LLM of width 128 over a task tokenizer.

Values the public code leaves open (segment duration, hop length, CRTE settings) are taken from the
defaults of the official Hugging Face port of OmniVinci; a real checkpoint's config.json overrides
them all, and nothing in vinci-edge hard-codes them.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from vinci_edge.config import OmniVinciConfig, build_config

PRESETS = ("omnivinci-9b", "nano", "tiny", "avtask")
AVTASK_MAX_TIME = 16.0  # seconds: CRTE's period for the task's 8 s clips (see the preset)


def _encoders(trope_dim: int, max_time: float) -> dict[str, str]:
    time = {
        "embed_time": "True",
        "time_embed_type": "pixel",
        "period_fix": "shortest",
        "trope_dim": trope_dim,
        "max_time": max_time,
    }
    video = {
        "_target_": "llava.model.encoders.TSPVideoEncoder",
        "pool_sizes": [[1, 1, 1]],
        "end_tokens": "None",
        **time,
    }
    sound = {"_target_": "llava.model.encoders.BasicSoundEncoder", "end_tokens": "None", **time}
    image = {"_target_": "llava.model.encoders.BasicImageEncoder"}
    # Real checkpoints store these as JSON strings.
    return {
        "image_encoder": json.dumps(image),
        "video_encoder": json.dumps(video),
        "sound_encoder": json.dumps(sound),
    }


def _qwen2(
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    inter: int,
    vocab: int,
    tie: bool,
    max_pos: int = 32768,
    theta: float = 1e6,
) -> dict[str, Any]:
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": max_pos,
        "rms_norm_eps": 1e-6,
        "rope_theta": theta,
        "vocab_size": vocab,
        "tie_word_embeddings": tie,
        "use_sliding_window": False,
        "sliding_window": None,
        "attention_dropout": 0.0,
        "bos_token_id": None,
        "eos_token_id": None,
        "torch_dtype": "float32",
    }


def _siglip(hidden: int, layers: int, heads: int, inter: int, image: int, patch: int) -> dict[str, Any]:
    return {
        "architectures": ["SiglipVisionModel"],
        "model_type": "siglip_vision_model",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_channels": 3,
        "image_size": image,
        "patch_size": patch,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
        "attention_dropout": 0.0,
        "torch_dtype": "float32",
    }


def _qwen2_audio(d_model: int, layers: int, heads: int, ffn: int) -> dict[str, Any]:
    """The real sound_tower/config.json is a Qwen2-Audio config with the encoder in `audio_config`."""
    encoder = {
        "model_type": "qwen2_audio_encoder",
        "num_mel_bins": 128,
        "d_model": d_model,
        "encoder_layers": layers,
        "encoder_attention_heads": heads,
        "encoder_ffn_dim": ffn,
        "max_source_positions": 1500,
        "activation_function": "gelu",
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "scale_embedding": False,
    }
    return {
        "architectures": ["Qwen2AudioForConditionalGeneration"],
        "model_type": "qwen2_audio",
        "audio_config": encoder,
        "torch_dtype": "float32",
    }


def _root(
    hidden: int,
    vision_width: int,
    scales: list[int],
    frames: int,
    trope_dim: int,
    seg: float,
    hop: int,
    chunk_len: int,
    max_time: float,
) -> dict[str, Any]:
    return {
        "architectures": ["VILAForCausalLM"],
        "model_type": "vila",
        "hidden_size": hidden,
        "mm_hidden_size": vision_width * len(scales),
        "image_aspect_ratio": "dynamic_s2",
        "num_video_frames": frames,
        "fps": 0.0,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "cls_patch",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "s2": False,
        "dynamic_s2": True,
        "s2_scales": ",".join(str(s) for s in scales),
        "s2_max_split_size": scales[0],
        "s2_resize_output_to_scale_idx": -1,
        "min_tiles": 1,
        "max_tiles": 12,
        **_encoders(trope_dim, max_time),
        "load_audio_in_video": True,
        "interleaved_vis_aud_in_video": True,
        "interleaved_video_segment_duration": seg,
        "audio_sampling_rate": 16000,
        "audio_chunk_length": chunk_len,
        "audio_hop_length": hop,
        "mm_use_bos_eos_tokens": False,
        "model_dtype": "torch.float32",
        "llm_cfg": {"_name_or_path": "./llm"},
        "vision_tower_cfg": {"_name_or_path": "./vision_tower"},
        "mm_projector_cfg": {"_name_or_path": "./mm_projector"},
        "sound_tower_cfg": {"_name_or_path": "./sound_tower"},
        "sound_mm_projector_cfg": {"_name_or_path": "./sound_mm_projector"},
    }


def preset_components(name: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(root config, {component: config}) of a preset, as they are written to disk."""
    if name == "omnivinci-9b":
        hidden, vision_width, scales = 3584, 1152, [448, 896, 1344]
        llm = _qwen2(hidden, 28, 28, 4, 18944, 152064, tie=False)
        llm["torch_dtype"] = "bfloat16"
        vision = _siglip(vision_width, 27, 16, 4304, 448, 14)
        sound = _qwen2_audio(1280, 32, 20, 5120)
        root = _root(hidden, vision_width, scales, 32, 128, 30.0, 60, 120, 3600.0)
        root["model_dtype"] = "torch.bfloat16"
    elif name == "nano":
        hidden, vision_width, scales = 896, 768, [224, 448, 672]
        llm = _qwen2(hidden, 24, 14, 2, 4864, 151936, tie=True)
        vision = _siglip(vision_width, 12, 12, 3072, 224, 16)
        sound = _qwen2_audio(512, 6, 8, 2048)
        root = _root(hidden, vision_width, scales, 8, 128, 30.0, 160, 120, 3600.0)
    elif name == "tiny":
        hidden, vision_width, scales = 64, 32, [56, 112, 168]
        llm = _qwen2(hidden, 2, 4, 2, 128, 1024, tie=False, max_pos=4096, theta=10000.0)
        # A wider init than HF's 0.02 makes the random tiny LLM's logits peaked and its greedy
        # answers varied, so token-parity tests compare 32 different tokens, not one repeated.
        llm["initializer_range"] = 0.3
        vision = _siglip(vision_width, 2, 2, 64, 56, 14)
        sound = _qwen2_audio(32, 2, 2, 64)
        root = _root(hidden, vision_width, scales, 4, 16, 2.0, 160, 120, 3600.0)
    elif name == "avtask":
        hidden, vision_width, scales = 128, 64, [64, 128, 192]
        llm = _qwen2(hidden, 4, 4, 2, 384, 512, tie=True, max_pos=2048, theta=10000.0)
        vision = _siglip(vision_width, 3, 4, 128, 64, 8)
        sound = _qwen2_audio(64, 2, 4, 128)
        # CRTE's fastest channel turns once over max_time: at the 3,600 s of the large presets it
        # turns 0.8 degrees over an 8 s clip, so the rows carry no readable time. Twice the clips'
        # length turns it half a circle across a clip and never wraps inside 16 s.
        root = _root(hidden, vision_width, scales, 8, 32, 2.0, 160, 120, AVTASK_MAX_TIME)
    else:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    components = {
        "llm": llm,
        "vision_tower": vision,
        "mm_projector": {
            "architectures": ["MultimodalProjector"],
            "model_type": "v2l_projector",
            "mm_projector_type": "mlp_downsample",
        },
        "sound_tower": sound,
        "sound_mm_projector": {
            "architectures": ["SoundMultimodalProjector"],
            "model_type": "sound_mm_projector",
            "sound_mm_projector_type": "mlp",
        },
    }
    return root, components


def preset_config(name: str, llm_override: dict[str, Any] | None = None) -> OmniVinciConfig:
    """The parsed config of a preset; `llm_override` replaces the LLM config (GGUF import)."""
    root, comps = preset_components(name)
    comps = copy.deepcopy(comps)
    if llm_override is not None:
        comps["llm"] = llm_override
        root["hidden_size"] = int(llm_override["hidden_size"])
    return build_config(root, comps)
