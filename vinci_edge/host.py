"""Which CPU this process runs on: its model name and instruction-set flags.

Every figure this project records (a benchmark, a training run, a profile, the integer GEMM check)
belongs to one CPU kind, so each says which; this is the one reader of /proc/cpuinfo. x86 spells
the keys "model name" / "flags", Arm "Hardware" or "CPU model" / "Features".
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# The instruction sets that decide which kernels ONNX Runtime and PyTorch pick (as /proc/cpuinfo
# spells them): x86 AVX2 / AVX-512 / VNNI / AMX, Arm dot products, int8 matrix multiply and SVE.
ISA_FLAGS = (
    "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
    "amx_int8", "amx_bf16", "asimddp", "i8mm", "sve", "sve2",
)  # fmt: skip


@functools.cache
def cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) of this machine's first CPU; ("", empty) where there is no /proc/cpuinfo."""
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return "", frozenset()


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first CPU a /proc/cpuinfo text lists."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    return model, flags


def cpu_name() -> str:
    """The CPU's model name, or what the platform module knows where /proc/cpuinfo has none."""
    return cpuinfo()[0] or platform.processor() or platform.machine() or "unknown CPU"


def isa_flags() -> list[str]:
    """The flags of ISA_FLAGS this CPU has, in ISA_FLAGS' order."""
    flags = cpuinfo()[1]
    return [f for f in ISA_FLAGS if f in flags]
