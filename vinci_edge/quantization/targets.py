"""Which precisions a deployment target can run, checked before any work is done.

A target is where the engine will run, not where it is quantized (quantizing always runs on this
machine's CPU). The TensorRT precisions (`int8`, `fp8`, `int4-awq`, `int4-dq`) are Q/DQ graphs for
TensorRT's builder; the CPU precisions (`int8-dynamic`, `int8-compute`, `int4`) use ONNX Runtime
kernels, which also run on a Jetson's Arm cores. FP8 needs FP8 tensor cores: Ada (sm_89), Hopper
(sm_90) and Blackwell/Thor (sm_110), not Orin's Ampere (sm_87).
"""

from __future__ import annotations

from vinci_edge.errors import ConfigError

CPU_PRECISIONS = ("int8-dynamic", "int8-compute", "int4")
TRT_PRECISIONS = ("int8", "fp8", "int4-awq", "int4-dq")
ALL_PRECISIONS = ("fp32", *CPU_PRECISIONS, *TRT_PRECISIONS)

# target -> (what it is, precisions it runs). fp32 (an unchanged copy) runs everywhere.
TARGETS: dict[str, tuple[str, tuple[str, ...]]] = {
    # The Q/DQ graphs do load in ONNX Runtime on a CPU (that is how their accuracy is measured here),
    # but they run slower than fp32 there (static Q/DQ ~6x, FP8 only without graph optimisation):
    # for --target cpu they are refused rather than shipped by mistake.
    "cpu": ("x86-64 / Arm CPU, ONNX Runtime", ("fp32", *CPU_PRECISIONS)),
    "orin": (
        "Jetson AGX/NX Orin, Ampere sm_87: no FP8",
        ("fp32", *CPU_PRECISIONS, "int8", "int4-awq", "int4-dq"),
    ),
    "thor": ("Jetson Thor, Blackwell sm_110", ALL_PRECISIONS),
    "ada": ("Ada Lovelace sm_89 (RTX 40, L4, L40)", ALL_PRECISIONS),
    "hopper": ("Hopper sm_90 (H100, H200, GH200)", ALL_PRECISIONS),
}


def check_target(target: str | None, precisions: dict[str, str]) -> None:
    """Refuse, before anything is read or written, a precision the target cannot run."""
    if target is None:
        return
    if target not in TARGETS:
        raise ConfigError(
            f"unknown --target {target!r}",
            hint=f"choose one of {', '.join(TARGETS)} (or leave it out to skip the check)",
        )
    what, runs = TARGETS[target]
    bad = {stage: p for stage, p in precisions.items() if p not in runs}
    if bad:
        listed = ", ".join(f"{s}={p}" for s, p in bad.items())
        raise ConfigError(
            f"--target {target} ({what}) cannot run {listed}",
            hint=f"{target} runs {', '.join(runs)}"
            + ("; FP8 needs an Ada, Hopper or Thor GPU" if "fp8" in bad.values() else ""),
        )
