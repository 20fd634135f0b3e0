"""Pick the stitch implementation: the fastest one present, never an error when the native library
is missing (why is logged at debug level; `vinci_edge.runtime.native_stitch.unavailable_reason()`).

    name, stitch = select_stitch()          # "cpp" or "numpy": stitch(x: StitchInputs, out_dtype)
    name, stitch = select_stitch("cuda")    # "cuda": stitch_cuda(sources, plan, dim, out, ...) on
                                            # device buffers; else "cpp" / "numpy" as above

The runtime prints `name` in its --json output and profile. A caller asking for "cuda" must look at the
name it gets back: only "cuda" takes device pointers, the others take numpy `StitchInputs`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from vinci_edge.runtime import native_stitch as ns
from vinci_edge.runtime.stitch import stitch_numpy

log = logging.getLogger(__name__)

CHOICES = ("cuda", "cpp", "numpy")


def select_stitch(prefer: str | None = None, *, num_threads: int = 0) -> tuple[str, Callable]:
    """(name, callable) of the best stitch for the caller's inputs.

    prefer None or "cpp": numpy inputs, the C++ CPU kernel when the library loads, else numpy.
    prefer "numpy": numpy, always. prefer "cuda": the CUDA kernel (device pointers) when the library
    has its CUDA part and a device is visible, else what None gives. `num_threads` goes to the CPU
    kernel (0 = every CPU this process may use).
    """
    if prefer is not None and prefer not in CHOICES:
        raise ValueError(f"unknown stitch implementation {prefer!r}; choose one of {', '.join(CHOICES)}")
    if prefer == "numpy":
        return "numpy", stitch_numpy
    lib = ns.load_library()
    if lib is None:
        log.debug("stitch: numpy (native library unavailable: %s)", ns.unavailable_reason())
        return "numpy", stitch_numpy
    if prefer == "cuda":
        if not lib.has_cuda:
            log.debug("stitch: no CUDA kernel (%s was built without nvcc); using the CPU kernel", lib.path)
        elif (count := lib.cuda_device_count()) <= 0:
            log.debug("stitch: no CUDA device visible (count %d); using the CPU kernel", count)
        else:
            return "cuda", ns.stitch_cuda
    return "cpp", ns.NativeStitch(lib, num_threads=num_threads)
