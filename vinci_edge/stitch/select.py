"""Pick the stitch implementation: ONE selector for the runtime, the benchmarks and the tests.

    choice = select_stitch()         # "cpp" (library present) or "numpy"
    choice = select_stitch("cuda")   # "cuda" when the GPU path can run here, else "cpp" / "numpy"
    embeds = choice.stitch(inputs, np.float16)   # every choice: (StitchInputs, out_dtype) -> ndarray

Never an error for a missing library, cuda-python or device: the selector falls back (cuda -> cpp ->
numpy) and, when the caller asked for something it did not get, says why in `choice.note`, which the
runtime adds to the answer's warnings. With no preference the fastest present is used and a missing
library is only logged (debug level): numpy is then the expected result, not a surprise.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from vinci_edge.stitch.cpu import NativeStitch
from vinci_edge.stitch.cuda_host import CudaStitch, cuda_unavailable_reason
from vinci_edge.stitch.inputs import Stitch
from vinci_edge.stitch.library import NativeLibrary, load_library, unavailable_reason
from vinci_edge.stitch.numpy_stitch import stitch_numpy

log = logging.getLogger(__name__)

CHOICES = ("cuda", "cpp", "numpy")


class StitchChoice(NamedTuple):
    """What `select_stitch` picked: its name (reported in --json and profiles), the callable, and why
    it is not what the caller asked for (None when it is, or when nothing in particular was asked)."""

    name: str
    stitch: Stitch
    note: str | None = None


def select_stitch(prefer: str | None = None, *, num_threads: int = 0) -> StitchChoice:
    """The stitch to use: `prefer` one of CHOICES or None (the fastest CPU implementation present).

    "cuda": the CUDA kernel behind host-to-device copies (`CudaStitch`) when the library has its CUDA
    part, cuda-python imports and a device is visible. "cpp": the C++ CPU kernel (`NativeStitch`,
    `num_threads` threads, 0 = every CPU this process may use). "numpy": the reference, always.
    """
    if prefer is not None and prefer not in CHOICES:
        raise ValueError(f"unknown stitch implementation {prefer!r}; choose one of {', '.join(CHOICES)}")
    if prefer == "numpy":
        return StitchChoice("numpy", stitch_numpy)
    lib = load_library()
    if prefer == "cuda":
        why = cuda_unavailable_reason(lib)
        if why is None:
            return StitchChoice("cuda", CudaStitch(lib))
        fallback = _cpu_choice(lib, num_threads)
        return fallback._replace(note=f"stitch: asked for cuda, using {fallback.name}: {why}")
    choice = _cpu_choice(lib, num_threads)
    if prefer == "cpp" and choice.name != "cpp":
        return choice._replace(note=f"stitch: asked for cpp, using numpy: {unavailable_reason()}")
    return choice


def _cpu_choice(lib: NativeLibrary | None, num_threads: int) -> StitchChoice:
    if lib is None:
        log.debug("stitch: numpy (native library unavailable: %s)", unavailable_reason())
        return StitchChoice("numpy", stitch_numpy)
    return StitchChoice("cpp", NativeStitch(lib, num_threads=num_threads))
