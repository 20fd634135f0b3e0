"""`vinci-edge export`: checkpoint in, engine folder out.

    engine/
      manifest.json            the contract (see manifest.py)
      vision.onnx (+ .data)    frames -> projected tokens (and tower features for S2 images)
      image_projector.onnx     S2-merged image features -> tokens
      audio.onnx (+ .data)     mel chunks -> projected tokens
      decoder.onnx (+ .data)   inputs_embeds + KV buffers -> last-position logits (ONNX Runtime)
      decoder_portable.onnx    the same in standard operators, explicit KV cache (TensorRT);
                               its weights are decoder.onnx.data's (docs/portable-decoder.md)
      embed_tokens.npy         the text embedding table (memory-mapped by the runtime)
      tokenizer/               tokenizer.json, tokenizer_config.json, ...

The folder is written under a temporary name and renamed when complete, so a failed or interrupted
export never leaves a half-written engine behind (vinci_edge/output_folder.py: the rule every output
folder follows).
"""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vinci_edge import __version__
from vinci_edge import stages as st
from vinci_edge.config import OmniVinciConfig, load_config
from vinci_edge.errors import EngineError
from vinci_edge.export.decoder import TensorSource, export_decoder
from vinci_edge.export.decoder_portable import write_portable
from vinci_edge.manifest import (
    PORTABLE,
    Manifest,
    StageEntry,
    TensorInfo,
    TextEntry,
    model_id,
    stage_props,
    timeline_params,
)
from vinci_edge.output_folder import ENGINE, output_folder
from vinci_edge.progress import Progress, silent
from vinci_edge.stages import STAGE_NAMES

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
    return [st.VISION, st.IMAGE_PROJECTOR, *([st.AUDIO] if has_sound else []), st.DECODER]


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
) -> Manifest:
    """Export `stages` of a checkpoint to an engine folder and return its manifest."""
    from vinci_edge.model.checkpoint import check_weights, components, fingerprint

    say = progress or silent
    ckpt, out = Path(checkpoint), Path(out)
    cfg = load_config(ckpt)
    stages = _check_request(cfg, stages, dtype)
    # Every weight file the export will read, before any work: the LLM always (the text table), the
    # towers when a media stage is exported.
    check_weights(ckpt, components(cfg, with_towers=any(s != st.DECODER for s in stages)))
    source = {
        "checkpoint": str(ckpt.resolve()),
        "fingerprint": fingerprint(ckpt),
        "llm_architecture": cfg.llm_architecture,
        # Which export wrote the stage graphs: two seeds of one preset share the fingerprint above
        # (configs and file sizes), so the graphs carry this too (manifest.stage_props).
        "export_id": secrets.token_hex(8),
    }
    props = {s: stage_props(s, model_id(cfg.to_dict()), source) for s in stages}
    started = time.perf_counter()
    with output_folder(out, kind=ENGINE, force=force, inputs={"checkpoint": ckpt}, progress=say) as tmp:
        entries = _export_towers(ckpt, tmp, [s for s in stages if s != st.DECODER], dtype, props, say)
        graphs = {}
        if st.DECODER in stages:
            say("exporting the decoder")
            entries[st.DECODER] = _export_decoder(cfg, ckpt, tmp, max_context, dtype, props[st.DECODER], say)
            say("writing the portable decoder graph (standard operators, the same weights)")
            graphs[PORTABLE], _ = write_portable(tmp, entries[st.DECODER])
        say("writing the text embedding table and the tokenizer")
        text = _write_text(ckpt, tmp, dtype)
        teg, crte = timeline_params(cfg)
        manifest = Manifest(
            model_config=cfg.to_dict(),
            stages=entries,
            text=text,
            source=source,
            exporters=_versions(),
            precision={name: {"dtype": e.dtype, "method": "none"} for name, e in entries.items()},
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            teg=teg,
            crte=crte,
            decoder_graphs=graphs,
        )
        manifest.write(tmp)
    say(f"engine written to {out} in {time.perf_counter() - started:.1f} s")
    return manifest


def _check_request(cfg: OmniVinciConfig, stages: Sequence[str] | None, dtype: str) -> list[str]:
    """The stages to export, every request refused before anything is loaded or written."""
    if dtype not in DTYPES:
        raise EngineError(f"--dtype {dtype} is not supported", hint=f"choose one of {', '.join(DTYPES)}")
    stages = list(stages) if stages else default_stages(cfg.has_sound)
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown:
        raise EngineError(f"unknown stage(s) {unknown}", hint=f"stages are {', '.join(STAGE_NAMES)}")
    if st.AUDIO in stages and not cfg.has_sound:
        raise EngineError("the checkpoint has no sound tower; cannot export the audio stage")
    return stages


def _export_towers(
    ckpt: Path,
    folder: Path,
    stages: list[str],
    dtype: str,
    props: dict[str, dict[str, str]],
    say: Progress,
) -> dict[str, StageEntry]:
    """The media stages, from the checkpoint's towers (loaded without the LLM), each graph stamped
    with `props[stage]`, its provenance."""
    if not stages:
        return {}
    from vinci_edge.export.audio import export_audio
    from vinci_edge.export.vision import export_image_projector, export_vision
    from vinci_edge.model.checkpoint import load_model

    exporters = {
        st.VISION: (export_vision, "vision.onnx"),
        st.IMAGE_PROJECTOR: (export_image_projector, "image_projector.onnx"),
        st.AUDIO: (export_audio, "audio.onnx"),
    }
    say(f"loading the towers of {ckpt} ({dtype})")
    model = load_model(ckpt, dtype="float32", with_llm=False)
    out = {}
    for name in stages:
        fn, file = exporters[name]
        say(f"exporting the {name} stage")
        entry = fn(model, folder / file, dtype=dtype, progress=say, props=props[name])
        out[name] = StageEntry.from_dict(name, {**entry, "file": file})
    return out


def _export_decoder(
    cfg: OmniVinciConfig,
    ckpt: Path,
    folder: Path,
    max_context: int,
    dtype: str,
    props: dict[str, str],
    say: Progress,
) -> StageEntry:
    path = folder / "decoder.onnx"
    spec = export_decoder(cfg, ckpt / "llm", path, max_context, dtype, say, props=props)
    data = path.with_name(path.name + ".data")
    return StageEntry(
        file=path.name,
        dtype=dtype,
        inputs=[TensorInfo(n) for n in spec.input_names()],
        outputs=[TensorInfo("logits", [1, 1, spec.vocab_size], dtype)],
        opset=17,
        exporter="vinci-edge graph builder (onnx.helper, com.microsoft fused ops)",
        external_data=data.name if data.is_file() else None,
        decoder=spec,
    )


def _write_text(ckpt: Path, folder: Path, dtype: str) -> TextEntry:
    """The text embedding table (the runtime memory-maps it) and the tokenizer files."""
    table_dtype = "float16" if dtype == "float16" else "float32"
    embed = TensorSource(ckpt / "llm").get("model.embed_tokens.weight").astype(table_dtype)
    np.save(folder / "embed_tokens.npy", embed)
    (folder / "tokenizer").mkdir()
    for name in TOKENIZER_FILES:
        if (ckpt / "llm" / name).is_file():
            shutil.copy2(ckpt / "llm" / name, folder / "tokenizer" / name)
    return TextEntry("embed_tokens.npy", (int(embed.shape[0]), int(embed.shape[1])), table_dtype, "tokenizer")
