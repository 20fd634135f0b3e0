"""The CUDA kernel on device buffers: `stitch_cuda(sources, plan, dim, out, ...)`.

Buffers come from whoever owns device memory (cuda-python, ONNX Runtime / TensorRT I/O bindings, CuPy,
torch: anything that gives device addresses as ints); the kernel is enqueued on the caller's stream and
nothing is synchronised. `cuda_host.CudaStitch` is the numpy-in, numpy-out path built on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import DTypeLike

from vinci_edge.stitch.library import (
    NUM_KINDS,
    NativeLibrary,
    NativeLibraryError,
    PlanArrays,
    kernel_dtype,
    require_library,
    sources_array,
)


@dataclass(frozen=True)
class DeviceSource:
    """One kind's rows on the device: `rows` x `row_stride` elements of `dtype` (float32 / float16) at
    device address `ptr`, and optionally its CRTE frequency tables (float64 device arrays). A source
    without tables is a plain gather."""

    ptr: int
    rows: int
    dtype: DTypeLike = np.float32
    row_stride: int | None = None  # elements between rows; None = dim
    freqs_a: int = 0
    len_a: int = 0
    freqs_b: int = 0
    len_b: int = 0


@dataclass(frozen=True)
class DevicePlan:
    """The plan on the device: n positions of kind (int8), src (int64), scale / a / b (float64)."""

    kind: int
    src: int
    scale: int
    a: int
    b: int
    n: int


def stitch_cuda(
    sources: Mapping[int, DeviceSource],
    plan: DevicePlan,
    dim: int,
    out: int,
    out_dtype: DTypeLike = np.float32,
    *,
    out_stride: int | None = None,
    stream: int = 0,
    error_flag: int = 0,
    lib: NativeLibrary | None = None,
) -> None:
    """Enqueue the fused stitch on `stream` (a cudaStream_t / CUstream as an int, 0 = the legacy
    default stream) and return without synchronising.

    `sources` maps a plan kind (`vinci_edge.kinds.Kind`) to its device rows: TEXT is the embedding
    table. `out` is the device address of the (n, dim) output (rows `out_stride` elements apart).
    Sizes, dtypes and table widths are checked here; a bad kind or src in the device plan zeroes that
    row and, when `error_flag` (a device int32, zeroed by the caller) is given, stores an error code
    there. The current CUDA device must be the one the buffers live on.

    Example with cuda-python, buffers already on the device (see tests/gpu/test_cuda_stitch.py):

        stitch_cuda({Kind.TEXT: DeviceSource(d_text, vocab), Kind.VIDEO: DeviceSource(d_video, rows,
                     freqs_a=d_freqs, len_a=64)}, DevicePlan(d_kind, d_src, d_scale, d_a, d_b, n),
                    dim, d_out, np.float16, stream=int(stream))
    """
    lib = lib if lib is not None else require_library()
    if not lib.has_cuda:
        raise NativeLibraryError(f"{lib.path} was built without CUDA (no nvcc at install time)")
    out_code = kernel_dtype(out_dtype)
    if out_code is None:
        raise ValueError(f"the CUDA stitch writes float32 or float16, not {np.dtype(out_dtype)}")
    arr = sources_array()
    for k, src in sources.items():
        if not 0 <= k < NUM_KINDS:
            raise ValueError(f"unknown plan kind {k}")
        code = kernel_dtype(src.dtype)
        if code is None:
            raise ValueError(f"the CUDA stitch reads float32 or float16 sources, not {np.dtype(src.dtype)}")
        arr[k].assign(
            src.ptr,
            src.rows,
            dim if src.row_stride is None else src.row_stride,
            code,
            freqs_a=src.freqs_a,
            len_a=src.len_a,
            freqs_b=src.freqs_b,
            len_b=src.len_b,
        )
    p = PlanArrays(plan.kind, plan.src, plan.scale, plan.a, plan.b, plan.n)
    stride = dim if out_stride is None else out_stride
    lib.stitch_cuda(arr, p, dim, out, stride, out_code, error_flag, stream)
