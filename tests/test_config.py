"""Parsing a realistic OmniVinci config.json (written from the documented keys) and its errors."""

import json
from pathlib import Path

import pytest

from vinci_edge.config import load_config
from vinci_edge.errors import ConfigError
from vinci_edge.presets import PRESETS, preset_components

VIDEO_ENCODER = json.dumps(
    {
        "_target_": "llava.model.encoders.TSPVideoEncoder",
        "pool_sizes": [[1, 1, 1]],
        "end_tokens": "None",
        "embed_time": "True",
        "trope_dim": 128,
        "trope_theta": 50000,
        "max_time": 1000,
        "time_embed_type": "pixel",
        "period_fix": "shortest",
    }
)
SOUND_ENCODER = json.dumps(
    {
        "_target_": "llava.model.encoders.BasicSoundEncoder",
        "embed_time": "True",
        "trope_dim": 64,
        "max_time": 1000,
        "time_embed_type": "lang",
        "period_fix": "True",
    }
)


def _write(folder: Path, root: dict, comps: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(root))
    for name, c in comps.items():
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "config.json").write_text(json.dumps(c))
    return folder


def realistic(tmp_path: Path) -> Path:
    """The 9B layout with encoder settings as JSON strings, as the real checkpoint stores them."""
    root, comps = preset_components("omnivinci-9b")
    root.update(
        video_encoder=VIDEO_ENCODER,
        sound_encoder=SOUND_ENCODER,
        num_video_frames=128,
        interleaved_video_segment_duration=5,
        audio_hop_length=60,
        audio_chunk_length="max_3600",
    )
    return _write(tmp_path / "omnivinci", root, comps)


def test_parses_real_layout(tmp_path):
    cfg = load_config(realistic(tmp_path))
    assert cfg.hidden_size == 3584 and cfg.vocab_size == 152064
    assert cfg.llm_architecture == "Qwen2ForCausalLM"
    assert cfg.s2_scales == [448, 896, 1344]
    assert cfg.mm_hidden_size == 3456  # 1152 x 3 scales
    assert cfg.tokens_per_frame == 256  # 32x32 patches folded 2x2
    assert cfg.num_video_frames == 128 and cfg.segment_duration == 5.0
    assert cfg.audio_hop_length == 60 and cfg.max_audio_seconds == 3600.0
    # the sound tower's qwen2_audio config is unwrapped to the encoder config
    assert cfg.sound_tower["d_model"] == 1280 and cfg.num_mel_bins == 128
    assert cfg.audio_tokens_per_chunk == 750
    v = cfg.video_encoder
    assert v.target == "TSPVideoEncoder" and v.end_tokens is None and v.pool_sizes == ((1, 1, 1),)
    assert v.time.branch == "mtct" and v.time.period_mode == "shortest" and v.time.dim == 128
    assert v.time.max_time == 1000.0
    s = cfg.sound_encoder
    assert s.time.branch == "axial" and s.time.freqs_for == "lang" and s.time.period_fix == "True"
    assert s.end_tokens == "\n"  # BasicSoundEncoder default
    assert cfg.image_encoder.time is None


def test_component_configs_fall_back_to_root_cfg_dicts(tmp_path):
    root, comps = preset_components("tiny")
    root["mm_projector_cfg"] = comps.pop("mm_projector")
    cfg = load_config(_write(tmp_path / "c", root, comps))
    assert cfg.mm_projector["mm_projector_type"] == "mlp_downsample"


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_parse(preset, tmp_path):
    root, comps = preset_components(preset)
    cfg = load_config(_write(tmp_path / preset, root, comps))
    assert cfg.mm_hidden_size == cfg.vision_width * 3
    assert cfg.has_sound


def test_trope_dim_defaults_to_half_hidden(tmp_path):
    root, comps = preset_components("tiny")
    root["video_encoder"] = json.dumps(
        {
            "_target_": "x.TSPVideoEncoder",
            "embed_time": "True",
            "time_embed_type": "pixel",
            "pool_sizes": [[1, 1, 1]],
        }
    )
    cfg = load_config(_write(tmp_path / "c", root, comps))
    assert cfg.video_encoder.time.dim == 32  # hidden 64 // 2


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r, c: r.update(video_encoder="{not json"), "not valid JSON"),
        (lambda r, c: c.pop("llm"), "lacks required components: llm"),
        (lambda r, c: r.update(hidden_size=4096), "differs from the LLM"),
        (lambda r, c: r.update(model_type="llama"), "not 'vila'"),
        (lambda r, c: c.pop("sound_mm_projector"), "both present or both absent"),
        (lambda r, c: r.update(s2_scales="112,224"), "S2 scale"),
        (
            lambda r, c: r.update(
                sound_encoder=json.dumps({"embed_time": "True", "time_embed_type": "learned_embed"})
            ),
            "learned_embed",
        ),
        (lambda r, c: c["mm_projector"].update(mm_projector_type="linear"), "not supported"),
    ],
)
def test_bad_configs_say_what_is_wrong(tmp_path, mutate, message):
    root, comps = preset_components("tiny")
    mutate(root, comps)
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path / "c", root, comps))


def test_missing_folder_and_bad_json(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        load_config(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(tmp_path / "bad")
