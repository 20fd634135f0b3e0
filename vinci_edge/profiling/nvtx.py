"""NVTX ranges around every stage, for Nsight Systems, when the stages run on a GPU.

The ranges must be pushed while the stage runs (a GPU timeline is only readable next to the CPU
ranges that launched its kernels), so they come from a `Metrics` subclass that the pipeline uses for
its requests (`Pipeline.metrics_factory`): the same `stage()` blocks, timed as before, each also
wrapped in a range. On the CPU, or where no NVTX binding is installed, the ranges are a no-op and
the pipeline keeps plain `Metrics`.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from vinci_edge.metrics import Metrics

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
DOMAIN = "vinci-edge"


@dataclass(frozen=True)
class Ranges:
    """push(name) / pop() of one NVTX binding; `source` names it ("none": a no-op)."""

    source: str
    push: Callable[[str], Any]
    pop: Callable[[], Any]

    @property
    def active(self) -> bool:
        return self.source != "none"


NO_RANGES = Ranges("none", lambda name: None, lambda: None)


def _nvtx_package() -> Ranges:
    import nvtx  # the `nvtx` PyPI package (NVIDIA's NVTX Python bindings)

    return Ranges(
        "nvtx package",
        lambda name: nvtx.push_range(message=name, domain=DOMAIN),
        lambda: nvtx.pop_range(domain=DOMAIN),
    )


def _cuda_python() -> Ranges:
    from cuda.bindings import nvtx as cnvtx  # present in some cuda-python releases only

    push, pop = cnvtx.nvtxRangePushA, cnvtx.nvtxRangePop
    return Ranges("cuda-python nvtx", lambda name: push(name.encode()), pop)


def _libnvtoolsext() -> Ranges:
    lib = ctypes.CDLL("libnvToolsExt.so.1")  # shipped with the CUDA toolkit (NVTX v2 ABI)
    lib.nvtxRangePushA.argtypes = [ctypes.c_char_p]
    return Ranges("libnvToolsExt", lambda name: lib.nvtxRangePushA(name.encode()), lib.nvtxRangePop)


def nvtx_ranges(on_gpu: bool) -> Ranges:
    """The first NVTX binding that loads when the stages run on a GPU; the no-op otherwise."""
    if not on_gpu:
        return NO_RANGES
    for make in (_nvtx_package, _cuda_python, _libnvtoolsext):
        try:
            return make()
        except (ImportError, OSError, AttributeError):
            continue
    return NO_RANGES


def uses_gpu(providers: Iterable[str]) -> bool:
    """Whether any of these ONNX Runtime providers runs on a GPU."""
    return any(p in GPU_PROVIDERS for p in providers)


@dataclass
class NvtxMetrics(Metrics):
    """`Metrics` whose every stage is also an NVTX range (the record is timed exactly as before)."""

    ranges: Ranges = field(default=NO_RANGES)

    @contextmanager
    def stage(self, name: str, **attrs: Any) -> Iterator[dict[str, Any]]:
        self.ranges.push(name)
        try:
            with super().stage(name, **attrs) as a:
                yield a
        finally:
            self.ranges.pop()


def metrics_factory(ranges: Ranges) -> Callable[[], Metrics]:
    """What `Pipeline.metrics_factory` should be: plain Metrics unless ranges are active."""
    if not ranges.active:
        return Metrics
    return lambda: NvtxMetrics(ranges=ranges)
