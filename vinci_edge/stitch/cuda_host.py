"""The CUDA kernel behind a host-to-device copy: `CudaStitch`, numpy in and numpy out, the signature
of `stitch_numpy` / `NativeStitch`, so a runtime whose stages hand over host arrays runs the GPU kernel.

One call: on the host, cut every used source to the rows the plan reads and remap src to them (the
text table above all: 152064 rows, 2 GB at 9B, of which a prompt reads tens); copy those rows, the
plan columns and the CRTE tables to the device on a fresh stream; run the kernel there; copy the output
back; free everything. The TensorRT runtime will keep these buffers resident instead.

cuda-python (`pip install 'vinci-edge[gpu]'`) is imported on first use, never at module import.
"""

from __future__ import annotations

import logging
from types import ModuleType

import numpy as np
from numpy.typing import DTypeLike

from vinci_edge.crte import RotationTable
from vinci_edge.errors import MissingDependencyError
from vinci_edge.kinds import Kind
from vinci_edge.stitch.cuda import DevicePlan, DeviceSource, stitch_cuda
from vinci_edge.stitch.inputs import StitchInputs, StitchPlan
from vinci_edge.stitch.library import (
    NUM_KINDS,
    NativeLibrary,
    kernel_dtype,
    require_library,
    unavailable_reason,
)
from vinci_edge.stitch.numpy_stitch import stitch_numpy

log = logging.getLogger(__name__)


class CudaError(RuntimeError):
    """A CUDA runtime call made through cuda-python failed."""


def import_cudart() -> ModuleType:
    """cuda-python's runtime module (`cuda.bindings.runtime`; `cuda.cudart` before 12.6).
    ImportError when cuda-python is not installed."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime  # older cuda-python
    return runtime


def cuda_unavailable_reason(lib: NativeLibrary | None) -> str | None:
    """None when `CudaStitch` can run here, else why not (in words fit for an answer's warnings)."""
    if lib is None:
        return f"the native library is unavailable ({unavailable_reason()})"
    if not lib.has_cuda:
        return f"{lib.path.name} was built without its CUDA part (no nvcc at install time)"
    count = lib.cuda_device_count()
    if count <= 0:
        return "no CUDA device is visible" + (" (no driver)" if count < 0 else "")
    try:
        rt = import_cudart()
    except ImportError:
        return "cuda-python is not installed (pip install 'vinci-edge[gpu]')"
    try:
        err, n = rt.cudaGetDeviceCount()
    except Exception as e:  # cuda-python 13 raises when it cannot load the driver
        return f"cuda-python cannot use the driver ({type(e).__name__}: {e})"
    if err != rt.cudaError_t.cudaSuccess or n <= 0:
        return f"cuda-python sees no CUDA device ({getattr(err, 'name', err)})"
    return None


def compact_inputs(x: StitchInputs) -> StitchInputs:
    """x with each kind the plan uses cut to the rows it reads, src remapped to them, and the kinds it
    does not use dropped (the text table then has no rows). Checked here, on the host, as numpy or the
    CPU kernel would: a kind outside 0..3 or a source that is not (rows, D) is a ValueError, a used kind
    without a source a KeyError, a src outside its source an IndexError."""
    plan, dim = x.plan, x.text_table.shape[1]
    kind = np.ascontiguousarray(plan.kind, dtype=np.int8)
    bad = (kind < 0) | (kind >= NUM_KINDS)
    if bad.any():
        raise ValueError(f"plan kind {int(kind[bad][0])} is outside 0..{NUM_KINDS - 1}")
    src = np.array(plan.src, dtype=np.int64)  # a copy: remapped below
    text_table, banks = x.text_table[:0], {}
    for k in (Kind(int(k)) for k in np.unique(kind)):
        sel = kind == k
        source = np.asarray(x.text_table if k == Kind.TEXT else x.banks[k])
        if source.ndim != 2 or source.shape[1] != dim:
            raise ValueError(f"the {k.label} source must be (rows, {dim}), got {source.shape}")
        rows, src[sel] = _used_rows(source, src[sel], k)
        if k == Kind.TEXT:
            text_table = rows
        else:
            banks[k] = rows
    columns = StitchPlan(kind, src, *(np.asarray(c, dtype=np.float64) for c in (plan.scale, plan.a, plan.b)))
    return StitchInputs(columns, text_table, banks, {k: x.tables.get(k) for k in banks})


def _used_rows(source: np.ndarray, idx: np.ndarray, kind: Kind) -> tuple[np.ndarray, np.ndarray]:
    """(the rows of `source` that idx reads, idx remapped to them); the whole source when it reads
    every row."""
    used, remapped = np.unique(idx, return_inverse=True)
    if used[0] < 0 or used[-1] >= source.shape[0]:
        wrong = used[0] if used[0] < 0 else used[-1]
        raise IndexError(f"{kind.label} row {wrong} is outside the source's {source.shape[0]} rows")
    if used.size == source.shape[0]:  # then used == 0..rows-1: nothing to gather
        return source, idx
    return source[used], remapped.reshape(idx.shape)


class CudaStitch:
    """`stitch_numpy` on the CUDA kernel, host arrays in and out (see the module docstring). Runs on
    the current CUDA device. Inputs the kernel does not take (float64 or bfloat16 sources, a float64
    output) go to `stitch_numpy`, as `NativeStitch` does."""

    name = "cuda"

    def __init__(self, lib: NativeLibrary | None = None, cudart: ModuleType | None = None) -> None:
        """`cudart`: cuda-python's runtime module (or anything with its API); imported when None."""
        self.lib = lib if lib is not None else require_library()
        try:
            self.cudart = cudart if cudart is not None else import_cudart()
        except ImportError as e:
            raise MissingDependencyError(
                f"the CUDA stitch needs cuda-python ({e})", hint="pip install 'vinci-edge[gpu]'"
            ) from e

    def __call__(self, x: StitchInputs, out_dtype: DTypeLike = np.float32) -> np.ndarray:
        out_dt = np.dtype(out_dtype)
        y = compact_inputs(x)
        used = {**({Kind.TEXT: y.text_table} if y.text_table.shape[0] else {}), **y.banks}
        if kernel_dtype(out_dt) is None or any(kernel_dtype(a.dtype) is None for a in used.values()):
            dtypes = sorted({str(a.dtype) for a in used.values()})
            log.debug("CUDA stitch: %s sources -> %s is not a kernel variant; using numpy", dtypes, out_dt)
            return stitch_numpy(x, out_dt)
        n, dim = len(y.plan), x.text_table.shape[1]
        out = np.empty((n, dim), dtype=out_dt)
        if n == 0:
            return out
        flag = np.zeros(1, np.int32)
        with _DeviceScratch(self.cudart) as dev:
            sources = {k: dev.source(rows, y.tables.get(k)) for k, rows in used.items()}
            p = y.plan
            plan = DevicePlan(*(dev.upload(c) for c in (p.kind, p.src, p.scale, p.a, p.b)), n)
            d_out, d_flag = dev.alloc(out.nbytes), dev.upload(flag)
            stitch_cuda(
                sources, plan, dim, d_out, out_dt, stream=dev.stream_handle, error_flag=d_flag, lib=self.lib
            )
            dev.download(d_out, out)
            dev.download(d_flag, flag)
            dev.synchronize()
        self.lib.check(int(flag[0]), "native stitch (CUDA)")  # checked on the host already: a safety net
        return out


class _DeviceScratch:
    """One call's stream and device buffers (cuda-python's runtime API); on exit the stream is drained,
    then every buffer freed and the stream destroyed, whether or not the call failed."""

    def __init__(self, rt: ModuleType) -> None:
        self.rt = rt
        self.ptrs: list[int] = []
        self.host: list[np.ndarray] = []  # host arrays a copy in flight reads or writes

    def __enter__(self) -> _DeviceScratch:
        self.stream = self._call("cudaStreamCreate")
        return self

    def __exit__(self, *exc: object) -> None:
        self.rt.cudaStreamSynchronize(self.stream)  # copies may still be in flight after an error
        for ptr in self.ptrs:
            self.rt.cudaFree(ptr)
        self.rt.cudaStreamDestroy(self.stream)

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def _call(self, name: str, *args: object) -> object:
        err, *rest = getattr(self.rt, name)(*args)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise CudaError(f"{name} failed: {getattr(err, 'name', err)}")
        return rest[0] if rest else None

    def alloc(self, nbytes: int) -> int:
        ptr = int(self._call("cudaMalloc", max(nbytes, 1)))
        self.ptrs.append(ptr)
        return ptr

    def upload(self, arr: np.ndarray) -> int:
        """A device copy of arr, enqueued on the stream."""
        arr = np.ascontiguousarray(arr)
        ptr = self.alloc(arr.nbytes)
        if arr.nbytes:
            self.host.append(arr)
            kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
            self._call("cudaMemcpyAsync", ptr, arr.ctypes.data, arr.nbytes, kind, self.stream)
        return ptr

    def download(self, ptr: int, out: np.ndarray) -> None:
        """Enqueue a copy of the device buffer at ptr into the C-contiguous `out` (see `synchronize`)."""
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync", out.ctypes.data, ptr, out.nbytes, kind, self.stream)

    def synchronize(self) -> None:
        """Wait until everything enqueued on the stream is done (the downloads written)."""
        self._call("cudaStreamSynchronize", self.stream)

    def source(self, rows: np.ndarray, table: RotationTable | None) -> DeviceSource:
        """rows (and the kind's CRTE table) on the device."""
        fa = fb = np.zeros(0, np.float64)
        if table is not None:
            fa, fb = (np.asarray(f, dtype=np.float64) for f in (table.freqs_a, table.freqs_b))
        return DeviceSource(
            ptr=self.upload(rows),
            rows=rows.shape[0],
            dtype=rows.dtype,
            freqs_a=self.upload(fa) if fa.size else 0,
            len_a=fa.size,
            freqs_b=self.upload(fb) if fb.size else 0,
            len_b=fb.size,
        )
