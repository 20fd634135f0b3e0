"""Checkpoint I/O in the real `nvidia/omnivinci` layout: load, save, and make random-weight ones.

config.json                      root (model_type "vila"; encoder settings as JSON strings)
llm/                             config.json, model.safetensors (or shards + index), tokenizer
vision_tower/                    config.json, model.safetensors (keys vision_model.*)
mm_projector/                    config.json, model.safetensors (keys layers.1/2/4)
sound_tower/                     config.json (qwen2_audio), model.safetensors (encoder keys)
sound_mm_projector/              config.json, model.safetensors (keys layers.0/2)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from vinci_edge.config import OmniVinciConfig, build_config, load_config
from vinci_edge.errors import CheckpointError
from vinci_edge.layout import sound_tower_file_config, write_configs
from vinci_edge.model.omnivinci import OmniVinciModel
from vinci_edge.output_folder import CHECKPOINT, output_folder
from vinci_edge.presets import preset_components
from vinci_edge.progress import Progress, silent

# component folder -> attribute path of the module whose state dict it holds
COMPONENT_MODULES = {
    "llm": "llm",
    "vision_tower": "vision_tower.vision_tower",
    "mm_projector": "mm_projector",
    "sound_tower": "sound_tower.audio_tower",
    "sound_mm_projector": "sound_mm_projector",
}

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _module(model: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        model = getattr(model, part)
    return model


def weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [folder / f for f in sorted(set(weight_map.values()))]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(
            f"{folder} holds no .safetensors weights",
            hint="each component folder needs model.safetensors (or shards with an index); "
            "was the checkpoint written with --config-only?",
        )
    return files


def _damaged(f: Path, exc: Exception) -> CheckpointError:
    """The one message for a weight file safetensors cannot read (load and export alike)."""
    return CheckpointError(f"cannot read {f}: {exc}", hint="the file is damaged or not safetensors")


def _require_file(f: Path) -> None:
    if not f.is_file():
        raise CheckpointError(f"weight shard {f} is missing", hint="re-download the checkpoint")


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for f in weight_files(folder):
        _require_file(f)
        try:
            with safe_open(str(f), framework="pt") as sf:
                for key in sf.keys():  # noqa: SIM118 - safe_open is not a dict
                    state[key] = sf.get_tensor(key)
        except Exception as exc:  # safetensors raises its own error types
            raise _damaged(f, exc) from exc
    return state


def components(cfg: OmniVinciConfig, with_llm: bool = True, with_towers: bool = True) -> list[str]:
    """The component folders a load reads: the LLM, and the towers and projectors (the sound ones
    only when the config has sound)."""
    sound = ("sound_tower", "sound_mm_projector")
    return [
        name
        for name in COMPONENT_MODULES
        if (with_llm if name == "llm" else with_towers and (cfg.has_sound or name not in sound))
    ]


def check_weights(checkpoint: str | Path, names: list[str]) -> None:
    """Refuse a checkpoint whose weights in the component folders `names` cannot be read: a missing
    folder or shard, or a file whose safetensors header is damaged or promises more bytes than the
    file holds (a truncated download). Reads the headers only, so long work (export) can check up
    front instead of failing halfway."""
    ckpt = Path(checkpoint)
    for name in names:
        folder = ckpt / name
        if not folder.is_dir():
            raise CheckpointError(f"{ckpt} has no {name}/ folder", hint="the checkpoint is incomplete")
        for f in weight_files(folder):
            _require_file(f)
            try:
                with safe_open(str(f), framework="pt"):
                    pass  # opening parses the header and checks the file's size against it
            except Exception as exc:
                raise _damaged(f, exc) from exc


def _load_component(model: OmniVinciModel, name: str, folder: Path, dtype: torch.dtype) -> None:
    module = _module(model, COMPONENT_MODULES[name])
    state = read_state_dict(folder)
    expected = module.state_dict()
    tied = name == "llm" and bool(model.cfg.llm.get("tie_word_embeddings", False))
    missing = [k for k in expected if k not in state and not (tied and k == "lm_head.weight")]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}"
        for k in state
        if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} with the wrong shape (e.g. {'; '.join(wrong[:3])})")
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointError(
            f"{folder.name}/ weights do not match {folder.name}/config.json: " + "; ".join(parts),
            hint="the weights and configs come from different models; use the config.json that was "
            "saved with these weights",
        )
    module.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
    if tied:
        model.llm.tie_weights()


def load_model(checkpoint: str | Path, dtype: str = "float32", with_llm: bool = True) -> OmniVinciModel:
    """Load a checkpoint folder (real layout) into the reference model, checking every weight.
    `with_llm=False` loads the towers and projectors only."""
    ckpt = Path(checkpoint)
    cfg = load_config(ckpt)
    torch_dtype = DTYPES[dtype]
    model = OmniVinciModel(cfg, with_llm=with_llm).to(torch_dtype)
    for name in components(cfg, with_llm=with_llm):
        folder = ckpt / name
        if not folder.is_dir():
            raise CheckpointError(f"{ckpt} has no {name}/ folder", hint="the checkpoint is incomplete")
        _load_component(model, name, folder, torch_dtype)
    return model.eval()


def save_component(
    module: nn.Module, folder: Path, config: dict[str, Any], skip: tuple[str, ...] = ()
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items() if k not in skip}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def save_checkpoint(model: OmniVinciModel, out: str | Path, write_llm: bool = True) -> None:
    """Write all weights and configs. The tokenizer in llm/ is written separately."""
    out = Path(out)
    cfg = model.cfg
    write_configs(out, cfg)
    tied = bool(cfg.llm.get("tie_word_embeddings", False))
    if write_llm:
        save_component(model.llm, out / "llm", cfg.llm, skip=("lm_head.weight",) if tied else ())
    save_component(model.vision_tower.vision_tower, out / "vision_tower", cfg.vision)
    save_component(model.mm_projector, out / "mm_projector", cfg.mm_projector)
    if cfg.has_sound:
        save_component(
            model.sound_tower.audio_tower, out / "sound_tower", sound_tower_file_config(cfg.sound_tower)
        )
        save_component(model.sound_mm_projector, out / "sound_mm_projector", cfg.sound_mm_projector)


TOKENIZER_VOCAB = {"tiny": 1024, "nano": 8192, "omnivinci-9b": 8192}


def init_checkpoint(
    preset: str,
    out: str | Path,
    seed: int = 0,
    llm_gguf: str | Path | None = None,
    config_only: bool = False,
    dtype: str = "float32",
    progress: Progress | None = None,
) -> OmniVinciConfig:
    """Write a random-weight checkpoint of `preset` in the real layout, with a working tokenizer.

    `llm_gguf` fills llm/ (weights + tokenizer) from a GGUF LLM instead; the projectors are then
    sized to that LLM. `config_only` writes configs and tokenizer but no weights.
    """
    say = progress or silent
    with output_folder(out, kind=CHECKPOINT, progress=say) as folder:
        return _fill_checkpoint(folder, preset, seed, llm_gguf, config_only, dtype, say)


def _fill_checkpoint(
    out: Path,
    preset: str,
    seed: int,
    llm_gguf: str | Path | None,
    config_only: bool,
    dtype: str,
    say: Progress,
) -> OmniVinciConfig:
    """`init_checkpoint`'s work, into `out` (its partial folder)."""
    root, comps = preset_components(preset)
    llm_dir = out / "llm"
    if llm_gguf is not None:
        from vinci_edge.model.gguf_import import import_gguf_llm

        say(f"importing the LLM from {llm_gguf}")
        comps["llm"] = import_gguf_llm(llm_gguf, llm_dir, progress=say)
        root["hidden_size"] = int(comps["llm"]["hidden_size"])
    else:
        from vinci_edge.text.train_tokenizer import write_trained_tokenizer

        say("training the tokenizer")
        write_trained_tokenizer(llm_dir, vocab_size=TOKENIZER_VOCAB[preset])
    cfg = build_config(root, comps)
    if config_only:
        say("writing configs (no weights)")
        write_configs(out, cfg)
        return cfg
    say(f"building {preset} with random weights (seed {seed})")
    torch.manual_seed(seed)
    model = OmniVinciModel(cfg).to(DTYPES[dtype])
    if llm_gguf is not None:
        _load_component(model, "llm", llm_dir, DTYPES[dtype])
        _match_embedding_scale(model)
    say("writing the weights")
    save_checkpoint(model, out, write_llm=llm_gguf is None)
    return cfg


@torch.inference_mode()
def _match_embedding_scale(model: OmniVinciModel) -> None:
    """Random projectors put media tokens far outside a trained LLM's embedding scale, and the LLM
    then answers nothing at all (its first token is end-of-turn). Scale each projector's last layer
    so its outputs have a tenth of the RMS of the LLM's text embeddings: hundreds of random
    directions at the full text scale still drown the question (measured with SmolLM2: 1.0x -> an
    empty answer, 0.1x -> a fluent one). The towers stay random; the answer is not about the clip."""
    cfg = model.cfg
    target = 0.1 * model.llm.get_input_embeddings().weight.float().pow(2).mean().sqrt()
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 3, cfg.image_size, cfg.image_size, generator=g) * 2 - 1
    outputs = [(model.mm_projector.layers[-1], model.encode_frames(pixels))]
    if cfg.has_sound:
        mel = torch.randn(1, cfg.num_mel_bins, 3000, generator=g) * 0.5 - 0.5
        outputs.append((model.sound_mm_projector.layers[-1], model.encode_audio(mel)))
    for layer, out in outputs:
        factor = (target / out.float().pow(2).mean().sqrt()).item()
        layer.weight.mul_(factor)
        layer.bias.mul_(factor)


def fingerprint(checkpoint: str | Path) -> str:
    """A short hash of the configs and weight-file sizes: what an engine records as its source."""
    ckpt = Path(checkpoint)
    h = hashlib.sha256()
    for p in sorted(ckpt.rglob("*")):
        if p.is_file() and (p.suffix == ".json" or p.suffix == ".safetensors"):
            h.update(str(p.relative_to(ckpt)).encode())
            h.update(p.read_bytes() if p.suffix == ".json" else str(p.stat().st_size).encode())
    return h.hexdigest()[:16]
