"""OmniVinci configuration: one parser for the real checkpoint layout, and the presets.

A checkpoint is a folder with a root `config.json` (`model_type: "vila"`) and one sub-folder per
component (`llm/`, `vision_tower/`, `mm_projector/`, `sound_tower/`, `sound_mm_projector/`), each with
its own `config.json`. The root config stores the media encoder settings (`image_encoder`,
`video_encoder`, `sound_encoder`) as JSON *strings*; `parse_encoder` decodes them.

Everything here is torch-free: the runtime reads the same config from an engine manifest.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vinci_edge.errors import ConfigError

COMPONENTS = ("llm", "vision_tower", "mm_projector", "sound_tower", "sound_mm_projector")
OPTIONAL_COMPONENTS = ("sound_tower", "sound_mm_projector")

# Number of mel frames one audio-encoder pass takes (30 s at hop 160), fixed by the encoder's
# learned positions (1500 after the stride-2 conv).
AUDIO_CHUNK_FRAMES = 3000


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _none_token(value: Any) -> str | None:
    """Encoder token settings use the string "None" for no token."""
    if value is None or value == "None":
        return None
    return str(value)


@dataclass(frozen=True)
class TimeEmbedding:
    """CRTE settings of one media encoder (see `vinci_edge.crte`).

    `branch` is "mtct" (the MaxTimeContinuousTime rotary: `period_mode` "shortest" or "longest") or
    "axial" (a standard rotary table, `freqs_for` "lang" or "pixel", over a (row, column) grid).
    """

    branch: str
    dim: int
    max_time: float | None
    period_mode: str | None = None  # mtct only
    freqs_for: str | None = None  # axial only: "lang" | "pixel"
    theta: float = 10000.0  # axial "lang" only (before the max_time override)
    period_fix: str = "False"  # axial only: "True" scales time by 2*pi/max_time, else by -2*pi
    max_freq: float = 256.0  # axial "pixel" only
    angle_max_time: float | None = None  # axial only: max_time used for the period_fix "True" angle

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class EncoderConfig:
    """One of `image_encoder` / `video_encoder` / `sound_encoder` from the root config."""

    target: str
    start_tokens: str | None = None
    end_tokens: str | None = "\n"
    sep_tokens: str | None = None
    pool_sizes: tuple[tuple[int, int, int], ...] = ((1, 1, 1),)
    time: TimeEmbedding | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def parse_encoder(value: str | dict | None, kind: str, hidden_size: int) -> EncoderConfig:
    """Decode an encoder setting (a JSON string in real checkpoints) the way the official code does."""
    defaults = {
        "image": "BasicImageEncoder",
        "video": "TSPVideoEncoder",
        "sound": "BasicSoundEncoder",
    }
    if value is None or value == "":
        raw: dict[str, Any] = {"_target_": defaults[kind]}
    elif isinstance(value, str):
        try:
            raw = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{kind}_encoder is not valid JSON: {exc}",
                hint="the root config.json stores encoder settings as a JSON string, e.g. "
                '"{\\"_target_\\": \\"llava.model.encoders.TSPVideoEncoder\\"}"',
            ) from exc
    elif isinstance(value, dict):
        raw = dict(value)
    else:
        raise ConfigError(f"{kind}_encoder has an unsupported type {type(value).__name__}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{kind}_encoder must decode to a JSON object, got {type(raw).__name__}")

    target = str(raw.get("_target_", defaults[kind])).rsplit(".", 1)[-1]
    pool_sizes = tuple(tuple(int(x) for x in p) for p in raw.get("pool_sizes", [[1, 1, 1]]))
    for p in pool_sizes:
        if len(p) != 3 or min(p) < 1:
            raise ConfigError(f"{kind}_encoder pool_sizes entries must be 3 positive ints, got {p}")

    # The image encoder never embeds time (BasicImageEncoder ignores these keys).
    time = _parse_time_embedding(raw, kind, hidden_size) if kind != "image" else None
    end_default = "\n"
    return EncoderConfig(
        target=target,
        start_tokens=_none_token(raw.get("start_tokens")),
        end_tokens=_none_token(raw.get("end_tokens", end_default)),
        sep_tokens=_none_token(raw.get("sep_tokens")),
        pool_sizes=pool_sizes,
        time=time,
        raw=raw,
    )


def _parse_time_embedding(raw: dict[str, Any], kind: str, hidden_size: int) -> TimeEmbedding | None:
    # TSPVideoEncoder defaults embed_time to "False", BasicSoundEncoder to "True".
    embed_time = _truthy(raw.get("embed_time", "False" if kind == "video" else "True"))
    if not embed_time:
        return None
    time_embed_type = raw.get("time_embed_type", "pixel")
    period_fix = raw.get("period_fix", False)
    max_time = raw.get("max_time")
    max_time = float(max_time) if max_time is not None else None

    period_mode = None
    if period_fix in ("shortest", "longest"):
        period_mode, period_fix = period_fix, "MTCT"
    elif period_fix == "MTCT":
        period_mode = "shortest"

    if period_fix == "MTCT":
        dim = int(raw.get("trope_dim", 128))
        if max_time is None:
            raise ConfigError(f"{kind}_encoder uses period_fix MTCT but sets no max_time")
        if dim % 4 or dim < 4:
            # MTCT rotates the first dim/2 channels in interleaved pairs, so dim/2 must be even.
            raise ConfigError(f"{kind}_encoder trope_dim must be a multiple of 4 for MTCT, got {dim}")
        return TimeEmbedding(branch="mtct", dim=dim, max_time=max_time, period_mode=period_mode)

    if time_embed_type not in ("lang", "pixel"):
        raise ConfigError(
            f"{kind}_encoder time_embed_type {time_embed_type!r} is not supported",
            hint="vinci-edge supports the CRTE branches 'MTCT' (period_fix shortest/longest) and the "
            "rotary 'lang' / 'pixel' tables; 'learned_embed' needs trained time-embedding weights",
        )
    # The official code fills a missing trope_dim with hidden_size // 2.
    dim = int(raw.get("trope_dim") or hidden_size // 2)
    theta = float(raw.get("trope_theta", 50000 if kind == "video" else 10000))
    # Quirk kept from the official code: the video "pixel" table is built without max_time,
    # the sound one with it; the "lang" tables always get it.
    table_max_time = max_time if (time_embed_type == "lang" or kind == "sound") else None
    # `angle_max_time` scales the per-token angle when period_fix is "True" (time / max_time * 2 pi);
    # it is the encoder's max_time even where the table itself was built without one.
    return TimeEmbedding(
        branch="axial",
        dim=dim,
        max_time=table_max_time,
        freqs_for=time_embed_type,
        theta=theta if kind == "video" else 10000.0,
        period_fix=str(period_fix),
        max_freq=256.0,
        angle_max_time=max_time,
    )


@dataclass(frozen=True)
class OmniVinciConfig:
    """The parsed configuration of a whole checkpoint."""

    root: dict[str, Any]
    llm: dict[str, Any]
    vision: dict[str, Any]
    mm_projector: dict[str, Any]
    sound_tower: dict[str, Any] | None
    sound_mm_projector: dict[str, Any] | None
    image_encoder: EncoderConfig
    video_encoder: EncoderConfig
    sound_encoder: EncoderConfig

    # ---- scalar settings read from the root config (names as in config.json) ----
    @property
    def hidden_size(self) -> int:
        return int(self.llm["hidden_size"])

    @property
    def vocab_size(self) -> int:
        return int(self.llm["vocab_size"])

    @property
    def num_video_frames(self) -> int:
        return int(self.root.get("num_video_frames") or 8)

    @property
    def fps(self) -> float:
        return float(self.root.get("fps") or 0.0)

    @property
    def s2_scales(self) -> list[int]:
        scales = self.root.get("s2_scales") or [self.image_size]
        if isinstance(scales, str):
            scales = [int(s) for s in scales.split(",") if s.strip()]
        return sorted(int(s) for s in scales)

    @property
    def s2_resize_output_to_scale_idx(self) -> int:
        return int(self.root.get("s2_resize_output_to_scale_idx", 0) or 0)

    @property
    def image_aspect_ratio(self) -> str:
        return str(self.root.get("image_aspect_ratio") or "resize")

    @property
    def max_tiles(self) -> int:
        return int(self.root.get("max_tiles") or 12)

    @property
    def mm_vision_select_layer(self) -> int:
        return int(self.root.get("mm_vision_select_layer", -2))

    @property
    def mm_vision_select_feature(self) -> str:
        return str(self.root.get("mm_vision_select_feature") or "cls_patch")

    @property
    def load_audio_in_video(self) -> bool:
        return _truthy(self.root.get("load_audio_in_video", True)) and self.has_sound

    @property
    def interleaved_vis_aud_in_video(self) -> bool:
        return _truthy(self.root.get("interleaved_vis_aud_in_video", True))

    @property
    def segment_duration(self) -> float:
        return float(self.root.get("interleaved_video_segment_duration", 30))

    @property
    def audio_sampling_rate(self) -> int:
        return int(self.root.get("audio_sampling_rate", 16000))

    @property
    def audio_hop_length(self) -> int:
        return int(self.root.get("audio_hop_length", 160))

    @property
    def audio_chunk_length(self) -> int | str:
        """Seconds of audio kept (int), or "max" / "max_N" (keep all, or at most N seconds)."""
        value = self.root.get("audio_chunk_length", 120)
        if isinstance(value, str) and "max" in value:
            return value
        return int(value)

    @property
    def max_audio_seconds(self) -> float | None:
        value = self.audio_chunk_length
        if isinstance(value, int):
            return float(value)
        return float(value.split("_")[1]) if "_" in value else None

    @property
    def mm_use_bos_eos_tokens(self) -> bool:
        return _truthy(self.root.get("mm_use_bos_eos_tokens", False))

    # ---- derived shapes ----
    @property
    def has_sound(self) -> bool:
        return self.sound_tower is not None and self.sound_mm_projector is not None

    @property
    def image_size(self) -> int:
        return int(self.vision["image_size"])

    @property
    def patch_size(self) -> int:
        return int(self.vision["patch_size"])

    @property
    def vision_width(self) -> int:
        return int(self.vision["hidden_size"])

    @property
    def mm_hidden_size(self) -> int:
        """Projector input width: the tower width once per S2 scale (features repeat for video)."""
        return self.vision_width * len(self.s2_scales)

    @property
    def tokens_per_frame(self) -> int:
        """Projected tokens of one frame: the patch grid folded 2x2 (odd sides zero-padded)."""
        grid = self.s2_scales[0] // self.patch_size
        return math.ceil(grid / 2) ** 2

    @property
    def num_mel_bins(self) -> int:
        return int(self.sound_tower["num_mel_bins"]) if self.sound_tower else 128

    @property
    def sound_width(self) -> int:
        return int(self.sound_tower["d_model"]) if self.sound_tower else 0

    @property
    def audio_tokens_per_chunk(self) -> int:
        """Encoder output per 3000-frame chunk: conv stride 2 -> 1500, average pool 2 -> 750."""
        conv2 = (AUDIO_CHUNK_FRAMES - 1) // 2 + 1
        return (conv2 - 2) // 2 + 1

    @property
    def llm_architecture(self) -> str:
        archs = self.llm.get("architectures") or []
        return archs[0] if archs else self.llm.get("model_type", "qwen2")

    def to_dict(self) -> dict[str, Any]:
        """The whole config as written in a checkpoint (root + components), for manifests."""
        return {
            "root": self.root,
            "llm": self.llm,
            "vision_tower": self.vision,
            "mm_projector": self.mm_projector,
            "sound_tower": self.sound_tower,
            "sound_mm_projector": self.sound_mm_projector,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OmniVinciConfig:
        return build_config(
            d["root"],
            {
                "llm": d.get("llm"),
                "vision_tower": d.get("vision_tower"),
                "mm_projector": d.get("mm_projector"),
                "sound_tower": d.get("sound_tower"),
                "sound_mm_projector": d.get("sound_mm_projector"),
            },
        )


def _normalize_sound_tower(cfg: dict[str, Any] | None) -> dict[str, Any] | None:
    """The real sound tower config is a `qwen2_audio` config with the encoder nested in
    `audio_config`; a plain `qwen2_audio_encoder` config is accepted too."""
    if cfg is None:
        return None
    if cfg.get("model_type") == "qwen2_audio" or "audio_config" in cfg:
        inner = dict(cfg.get("audio_config") or {})
        inner.setdefault("model_type", "qwen2_audio_encoder")
        return inner
    return dict(cfg)


def build_config(root: dict[str, Any], components: dict[str, dict[str, Any] | None]) -> OmniVinciConfig:
    """Assemble a config from the root dict and component dicts (None where absent)."""
    missing = [c for c in ("llm", "vision_tower", "mm_projector") if not components.get(c)]
    if missing:
        raise ConfigError(
            f"checkpoint config lacks required components: {', '.join(missing)}",
            hint="a checkpoint needs llm/, vision_tower/ and mm_projector/ (each with config.json)",
        )
    sound_tower = _normalize_sound_tower(components.get("sound_tower"))
    sound_proj = components.get("sound_mm_projector")
    if bool(sound_tower) != bool(sound_proj):
        raise ConfigError(
            "sound_tower and sound_mm_projector must be both present or both absent",
            hint="copy the missing component folder from the same checkpoint",
        )
    llm = dict(components["llm"])
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        if key not in llm:
            raise ConfigError(f"llm config lacks '{key}'", hint="llm/config.json must be a full HF config")
    vision = dict(components["vision_tower"])
    for key in ("hidden_size", "image_size", "patch_size", "num_hidden_layers"):
        if key not in vision:
            raise ConfigError(f"vision_tower config lacks '{key}'")
    hidden = int(llm["hidden_size"])
    root_hidden = root.get("hidden_size")
    if root_hidden is not None and int(root_hidden) != hidden:
        raise ConfigError(
            f"root hidden_size {root_hidden} differs from the LLM's {hidden}",
            hint="the projectors must output the LLM width; the checkpoint mixes components",
        )
    cfg = OmniVinciConfig(
        root=dict(root),
        llm=llm,
        vision=vision,
        mm_projector=dict(components["mm_projector"]),
        sound_tower=sound_tower,
        sound_mm_projector=dict(sound_proj) if sound_proj else None,
        image_encoder=parse_encoder(root.get("image_encoder"), "image", hidden),
        video_encoder=parse_encoder(root.get("video_encoder"), "video", hidden),
        sound_encoder=parse_encoder(root.get("sound_encoder"), "sound", hidden),
    )
    _check_consistency(cfg)
    return cfg


def _check_consistency(cfg: OmniVinciConfig) -> None:
    ptype = cfg.mm_projector.get("mm_projector_type", "mlp_downsample")
    if ptype != "mlp_downsample":
        raise ConfigError(f"mm_projector_type {ptype!r} is not supported (OmniVinci uses mlp_downsample)")
    if cfg.sound_mm_projector is not None:
        stype = cfg.sound_mm_projector.get("sound_mm_projector_type", "mlp")
        if stype != "mlp":
            raise ConfigError(f"sound_mm_projector_type {stype!r} is not supported (OmniVinci uses mlp)")
    root_mm = cfg.root.get("mm_hidden_size")
    if root_mm is not None and int(root_mm) != cfg.mm_hidden_size:
        raise ConfigError(
            f"mm_hidden_size {root_mm} != vision width {cfg.vision_width} x {len(cfg.s2_scales)} S2 scales",
            hint="s2_scales or the vision tower config does not match the projector",
        )
    if cfg.s2_scales[0] != cfg.image_size:
        raise ConfigError(
            f"the first S2 scale ({cfg.s2_scales[0]}) must equal the vision tower image_size "
            f"({cfg.image_size})"
        )
    for enc in (cfg.video_encoder, cfg.sound_encoder):
        if enc.time is not None and enc.time.branch == "mtct" and enc.time.dim // 2 > cfg.hidden_size:
            raise ConfigError("trope_dim is larger than twice the LLM hidden size")
        if enc.time is not None and enc.time.branch == "axial" and 2 * enc.time.dim > cfg.hidden_size:
            raise ConfigError(
                f"axial CRTE rotates 2 x trope_dim = {2 * enc.time.dim} channels, more than the "
                f"hidden size {cfg.hidden_size}"
            )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open("r", encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def load_config(checkpoint: str | Path) -> OmniVinciConfig:
    """Parse a checkpoint folder in the real `nvidia/omnivinci` layout.

    Component configs come from each sub-folder's config.json; where a sub-folder has none, the
    root's `<name>_cfg` dict is used (the official code accepts both).
    """
    ckpt = Path(checkpoint)
    if not ckpt.is_dir():
        raise ConfigError(
            f"checkpoint folder {ckpt} does not exist",
            hint="pass the folder that holds config.json, llm/, vision_tower/, ... "
            "(make one with `vinci-edge init-checkpoint --preset tiny --out DIR`)",
        )
    root_path = ckpt / "config.json"
    if not root_path.is_file():
        raise ConfigError(
            f"{ckpt} has no config.json",
            hint="this does not look like an OmniVinci checkpoint (root config.json with model_type 'vila')",
        )
    root = _read_json(root_path)
    if root.get("model_type") not in ("vila", "omnivinci", None):
        raise ConfigError(
            f"{root_path} has model_type {root.get('model_type')!r}, not 'vila'",
            hint="vinci-edge loads OmniVinci checkpoints (nvidia/omnivinci layout)",
        )
    components: dict[str, dict[str, Any] | None] = {}
    for name in COMPONENTS:
        sub = ckpt / name / "config.json"
        if sub.is_file():
            components[name] = _read_json(sub)
        else:
            # A root `<name>_cfg` counts only when it is a full config, not a pointer to the folder.
            inline = root.get(f"{name}_cfg")
            components[name] = inline if isinstance(inline, dict) and "model_type" in inline else None
    return build_config(root, components)
