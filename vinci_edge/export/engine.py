"""`vinci-edge export`: checkpoint in, engine folder out.

    engine/
      manifest.json            the contract (see manifest.py)
      vision.onnx (+ .data)    frames -> projected tokens (and tower features for S2 images)
      image_projector.onnx     S2-merged image features -> tokens
      audio.onnx (+ .data)     mel chunks -> projected tokens
      decoder.onnx (+ .data)   inputs_embeds + KV buffers -> last-position logits
      embed_tokens.npy         the text embedding table (memory-mapped by the runtime)
      tokenizer/               tokenizer.json, tokenizer_config.json, ...

The folder is written under a temporary name and renamed when complete, so a failed or interrupted
export never leaves a half-written engine behind (vinci_edge/output_folder.py: the rule every output
folder follows).
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vinci_edge import __version__
from vinci_edge.config import load_config
from vinci_edge.errors import EngineError
from vinci_edge.export.decoder import TensorSource, export_decoder
from vinci_edge.export.manifest import FORMAT, SCHEMA_VERSION, model_id, timeline_params, write_manifest
from vinci_edge.output_folder import ENGINE, output_folder
from vinci_edge.progress import Progress, silent

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
DTYPES = ("float32", "float16")


def default_stages(has_sound: bool) -> list[str]:
    return ["vision", "image_projector", *(["audio"] if has_sound else []), "decoder"]


def _versions() -> dict[str, str]:
    import onnx
    import torch
    import transformers

    out = {
        "vinci_edge": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
    }
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return out


def export_engine(
    checkpoint: str | Path,
    out: str | Path,
    stages: Sequence[str] | None = None,
    dtype: str = "float32",
    max_context: int = 4096,
    force: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Export `stages` of a checkpoint to an engine folder and return its manifest."""
    from vinci_edge.model.checkpoint import fingerprint, load_model

    say = progress or silent
    ckpt, out = Path(checkpoint), Path(out)
    if dtype not in DTYPES:
        raise EngineError(f"--dtype {dtype} is not supported", hint=f"choose one of {', '.join(DTYPES)}")
    cfg = load_config(ckpt)
    stages = list(stages) if stages else default_stages(cfg.has_sound)
    unknown = [s for s in stages if s not in default_stages(True)]
    if unknown:
        raise EngineError(
            f"unknown stage(s) {unknown}", hint="stages are vision, image_projector, audio, decoder"
        )
    if "audio" in stages and not cfg.has_sound:
        raise EngineError("the checkpoint has no sound tower; cannot export the audio stage")

    started = time.perf_counter()
    with output_folder(out, kind=ENGINE, force=force, inputs={"checkpoint": ckpt}, progress=say) as tmp:
        manifest_stages: dict[str, Any] = {}
        towers = [s for s in stages if s != "decoder"]
        if towers:
            say(f"loading the towers of {ckpt} ({dtype})")
            model = load_model(ckpt, dtype="float32", with_llm=False)
            manifest_stages.update(_export_towers(model, tmp, towers, dtype, say))
            del model
        if "decoder" in stages:
            say("exporting the decoder")
            spec = export_decoder(cfg, ckpt / "llm", tmp / "decoder.onnx", max_context, dtype, say)
            manifest_stages["decoder"] = {
                "file": "decoder.onnx",
                "dtype": dtype,
                "opset": 17,
                "exporter": "vinci-edge graph builder (onnx.helper, com.microsoft fused ops)",
                "inputs": [{"name": n} for n in spec.input_names(spec.num_layers)],
                "outputs": [{"name": "logits", "shape": [1, 1, spec.vocab_size], "dtype": dtype}],
                "spec": spec.to_dict(),
            }
        say("writing the text embedding table and the tokenizer")
        embed = TensorSource(ckpt / "llm").get("model.embed_tokens.weight")
        np.save(tmp / "embed_tokens.npy", embed.astype(np.float16 if dtype == "float16" else np.float32))
        (tmp / "tokenizer").mkdir()
        for name in TOKENIZER_FILES:
            if (ckpt / "llm" / name).is_file():
                shutil.copy2(ckpt / "llm" / name, tmp / "tokenizer" / name)
        model_config = cfg.to_dict()
        manifest = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "model_id": model_id(model_config),
            "model_config": model_config,
            "source": {
                "checkpoint": str(ckpt.resolve()),
                "fingerprint": fingerprint(ckpt),
                "llm_architecture": cfg.llm_architecture,
            },
            "exporters": _versions(),
            "precision": {
                name: {"dtype": s["dtype"], "method": "none"} for name, s in manifest_stages.items()
            },
            "stages": manifest_stages,
            "text": {
                "embed_tokens": {
                    "file": "embed_tokens.npy",
                    "shape": list(embed.shape),
                    "dtype": "float16" if dtype == "float16" else "float32",
                },
                "tokenizer": "tokenizer",
            },
            **timeline_params(cfg),
        }
        write_manifest(tmp, manifest)
    say(f"engine written to {out} in {time.perf_counter() - started:.1f} s")
    return manifest


def _export_towers(model, folder: Path, stages: list[str], dtype: str, say) -> dict[str, Any]:
    from vinci_edge.export.audio import export_audio
    from vinci_edge.export.vision import export_image_projector, export_vision

    exporters = {
        "vision": (export_vision, "vision.onnx"),
        "image_projector": (export_image_projector, "image_projector.onnx"),
        "audio": (export_audio, "audio.onnx"),
    }
    out = {}
    for name in stages:
        fn, file = exporters[name]
        say(f"exporting the {name} stage")
        entry = fn(model, folder / file, dtype=dtype, progress=say)
        entry["file"] = file
        out[name] = entry
    return out
