"""Process memory: resident set size now and at its peak, and the GPU memory a run used.

Peak RSS comes from the kernel's high-water mark (VmHWM), which Linux lets a process reset
(`/proc/self/clear_refs`), so the profiler can tell the peak while loading sessions from the peak
while answering. GPU memory is sampled in a background thread through NVML (`nvidia-ml-py`, this
process's usage) or cuda-python (device-wide used memory) when either works; otherwise it is reported
as not available, with the reason, never as zero.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(key: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def current_rss() -> int | None:
    """Resident set size now, in bytes (None where /proc is absent)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb * 1024


def peak_rss() -> int:
    """Peak resident set size since the process started or since the last `reset_peak_rss`, bytes."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb * 1024
    # ru_maxrss is kilobytes on Linux, bytes on macOS; it cannot be reset.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak_rss() -> bool:
    """Restart the high-water mark at the current RSS; False where the kernel does not allow it."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


# ---- GPU ---------------------------------------------------------------------------------------------
class _NvmlProcessMemory:
    """GPU memory this process holds on any device (NVML's per-process accounting)."""

    source = "nvml (this process)"

    def __init__(self) -> None:
        import pynvml  # from the nvidia-ml-py package

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        self._pid = os.getpid()

    def used(self) -> int:
        total = 0
        for h in self._handles:
            for p in self._nvml.nvmlDeviceGetComputeRunningProcesses(h):
                if p.pid == self._pid and p.usedGpuMemory:
                    total += p.usedGpuMemory
        return total


class _CudaDeviceMemory:
    """Used memory of the current device (all processes: the fallback when NVML is missing)."""

    source = "cuda-python cudaMemGetInfo (whole device)"

    def __init__(self) -> None:
        from cuda.bindings import runtime

        self._rt = runtime
        err, _, _ = runtime.cudaMemGetInfo()
        if int(err) != 0:
            raise RuntimeError(f"cudaMemGetInfo failed ({err})")

    def used(self) -> int:
        _, free, total = self._rt.cudaMemGetInfo()
        return int(total) - int(free)


def _gpu_probe() -> tuple[Any | None, str]:
    reasons = []
    for probe in (_NvmlProcessMemory, _CudaDeviceMemory):
        try:
            return probe(), ""
        except Exception as exc:  # ImportError, no driver, no device: each is a reason, not a failure
            reasons.append(f"{probe.source}: {type(exc).__name__}: {str(exc)[:120]}")
    return None, "; ".join(reasons)


class GpuMemorySampler:
    """Samples GPU memory every `interval` s while active; `result()` says the peak or why not.

    On a CPU provider nothing is sampled: there is no GPU memory to report.
    """

    def __init__(self, on_gpu: bool, interval: float = 0.01) -> None:
        self.on_gpu = on_gpu
        self.interval = interval
        self._probe, self._reason = _gpu_probe() if on_gpu else (None, "the stages run on the CPU")
        self._baseline = 0
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuMemorySampler:
        if self._probe is not None:
            self._baseline = self._peak = self._probe.used()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._probe.used())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._probe.used())

    def result(self) -> dict[str, Any]:
        if self._probe is None:
            return {"available": False, "reason": self._reason}
        return {
            "available": True,
            "source": self._probe.source,
            "peak_bytes": self._peak,
            "at_start_bytes": self._baseline,
        }
