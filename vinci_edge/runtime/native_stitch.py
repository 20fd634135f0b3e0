"""The native stitch (libvinci_crte.so, built from cpp_ext/) through ctypes: torch-free, no Python
headers at build time.

- `load_library()` finds and loads the library, or returns None and says why (`unavailable_reason`).
  Where it looks: `VINCI_EDGE_NATIVE_LIB` when set (an explicit override: another build, or a path that
  does not exist to turn the library off), else the package's `_native/` directory. A library with
  another ABI version (a stale build) counts as missing. `VINCI_EDGE_NO_NATIVE=1` turns it off too.
- `NativeStitch` is a drop-in for `stitch_numpy(x, out_dtype)` on numpy inputs (the CPU kernel).
- `stitch_cuda` runs the CUDA kernel on device buffers (cuda-python, ONNX Runtime / TensorRT I/O
  bindings, CuPy, torch: anything that gives device addresses as ints), enqueued on the caller's stream.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vinci_edge import crte
from vinci_edge.kinds import Kind
from vinci_edge.runtime.stitch import StitchInputs, stitch_numpy

log = logging.getLogger(__name__)

ABI_VERSION = 1  # cpp_ext/crte_capi.h VINCI_CRTE_ABI_VERSION
LIB_NAME = "libvinci_crte.so"
ENV_LIB = "VINCI_EDGE_NATIVE_LIB"
ENV_NO_NATIVE = "VINCI_EDGE_NO_NATIVE"
NATIVE_DIR = Path(__file__).resolve().parent.parent / "_native"
BUILD_STATUS = "BUILD_FAILED.txt"  # written by setup.py when it could not build the library

NUM_KINDS = 4
F32, F16 = 0, 1
_DTYPE_CODES = {np.dtype(np.float32): F32, np.dtype(np.float16): F16}

OK, ERR_ARG, ERR_KIND, ERR_INDEX, ERR_NO_SOURCE, ERR_ROT, ERR_NO_CUDA, ERR_CUDA, ERR_INTERNAL = range(9)
# How a return code surfaces in Python: the exception numpy indexing would raise for the same mistake.
_ERRORS: dict[int, type[Exception]] = {
    ERR_ARG: ValueError,
    ERR_KIND: ValueError,
    ERR_INDEX: IndexError,
    ERR_NO_SOURCE: KeyError,
    ERR_ROT: ValueError,
}


class NativeLibraryError(RuntimeError):
    """The native library is missing, stale, or was built without the part a call needs."""


class Source(ctypes.Structure):
    """vinci_crte_source."""

    _fields_ = [
        ("data", ctypes.c_void_p),
        ("rows", ctypes.c_int64),
        ("row_stride", ctypes.c_int64),
        ("dtype", ctypes.c_int32),
        ("len_a", ctypes.c_int32),
        ("len_b", ctypes.c_int32),
        ("reserved", ctypes.c_int32),
        ("freqs_a", ctypes.c_void_p),
        ("freqs_b", ctypes.c_void_p),
    ]


class PlanArrays(ctypes.Structure):
    """vinci_crte_plan."""

    _fields_ = [
        ("kind", ctypes.c_void_p),
        ("src", ctypes.c_void_p),
        ("scale", ctypes.c_void_p),
        ("a", ctypes.c_void_p),
        ("b", ctypes.c_void_p),
        ("n", ctypes.c_int64),
    ]


_SourceArray = Source * NUM_KINDS


class NativeLibrary:
    """A loaded libvinci_crte with typed entry points."""

    def __init__(self, path: Path) -> None:
        self.path = path
        lib = ctypes.CDLL(str(path))  # ctypes releases the GIL around every call into it
        lib.vinci_crte_abi_version.restype = ctypes.c_int
        lib.vinci_crte_abi_version.argtypes = []
        self.abi_version = int(lib.vinci_crte_abi_version())
        if self.abi_version != ABI_VERSION:
            raise NativeLibraryError(
                f"{path} has ABI version {self.abi_version}, this vinci-edge needs {ABI_VERSION} "
                "(a stale build: reinstall vinci-edge)"
            )
        for name, res, args in (
            ("vinci_crte_version", ctypes.c_char_p, []),
            ("vinci_crte_has_cuda", ctypes.c_int, []),
            ("vinci_crte_cuda_device_count", ctypes.c_int, []),
            ("vinci_crte_cuda_archs", ctypes.c_char_p, []),
            ("vinci_crte_hardware_threads", ctypes.c_int, []),
            ("vinci_crte_strerror", ctypes.c_char_p, [ctypes.c_int]),
            ("vinci_crte_cuda_last_error", ctypes.c_char_p, []),
        ):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        stitch_args = [ctypes.POINTER(Source), ctypes.POINTER(PlanArrays), ctypes.c_int64, ctypes.c_void_p]
        stitch_args += [ctypes.c_int64, ctypes.c_int32]
        lib.vinci_crte_stitch_cpu.restype = ctypes.c_int
        lib.vinci_crte_stitch_cpu.argtypes = [*stitch_args, ctypes.c_int32]
        lib.vinci_crte_stitch_cuda.restype = ctypes.c_int
        lib.vinci_crte_stitch_cuda.argtypes = [*stitch_args, ctypes.c_void_p, ctypes.c_void_p]
        self._lib = lib
        self.version = lib.vinci_crte_version().decode()
        self.has_cuda = bool(lib.vinci_crte_has_cuda())
        self.cuda_archs = [a for a in lib.vinci_crte_cuda_archs().decode().split(";") if a]
        self.hardware_threads = int(lib.vinci_crte_hardware_threads())

    def cuda_device_count(self) -> int:
        """Visible CUDA devices; -1 when built without CUDA or when there is no driver."""
        return int(self._lib.vinci_crte_cuda_device_count())

    def strerror(self, code: int) -> str:
        return self._lib.vinci_crte_strerror(code).decode()

    def check(self, rc: int, what: str) -> None:
        if rc != OK:
            exc = _ERRORS.get(rc, RuntimeError)
            detail = f": {self._lib.vinci_crte_cuda_last_error().decode()}" if rc == ERR_CUDA else ""
            raise exc(f"{what}: {self.strerror(rc)}{detail} (code {rc})")

    def stitch_cpu(
        self,
        sources: ctypes.Array,
        plan: PlanArrays,
        dim: int,
        out: int,
        out_stride: int,
        out_dtype: int,
        num_threads: int,
    ) -> None:
        rc = self._lib.vinci_crte_stitch_cpu(
            sources, ctypes.byref(plan), dim, out, out_stride, out_dtype, num_threads
        )
        self.check(rc, "native stitch (CPU)")

    def stitch_cuda(
        self,
        sources: ctypes.Array,
        plan: PlanArrays,
        dim: int,
        out: int,
        out_stride: int,
        out_dtype: int,
        error_flag: int,
        stream: int,
    ) -> None:
        rc = self._lib.vinci_crte_stitch_cuda(
            sources, ctypes.byref(plan), dim, out, out_stride, out_dtype, error_flag or None, stream or None
        )
        self.check(rc, "native stitch (CUDA)")


# Loaded libraries by resolved path, and the reason the last lookup found none.
_loaded: dict[str, NativeLibrary] = {}
_last_reason: str | None = None


def library_path() -> Path:
    """Where the library is looked for (see the module docstring)."""
    override = os.environ.get(ENV_LIB)
    return Path(override) if override else NATIVE_DIR / LIB_NAME


def _missing_reason(path: Path) -> str:
    reason = f"{path} does not exist"
    status = path.parent / BUILD_STATUS
    if status.is_file():
        reason += f" (build: {status.read_text().strip()})"
    elif os.environ.get(ENV_LIB) is None:
        reason += " (vinci-edge was installed without cmake / a C++ compiler, or before cpp_ext existed)"
    return reason


def load_library(path: str | os.PathLike[str] | None = None) -> NativeLibrary | None:
    """The native library, or None (never an exception) when it cannot be used; the reason is logged at
    debug level and kept for `unavailable_reason()`."""
    global _last_reason
    if path is None and os.environ.get(ENV_NO_NATIVE, "") not in ("", "0"):
        _last_reason = f"{ENV_NO_NATIVE} is set"
    else:
        target = Path(path) if path is not None else library_path()
        key = str(target.resolve()) if target.exists() else str(target)
        if key in _loaded:
            _last_reason = None
            return _loaded[key]
        if not target.is_file():
            _last_reason = _missing_reason(target)
        else:
            try:
                _loaded[key] = NativeLibrary(target)
                _last_reason = None
                return _loaded[key]
            except (OSError, AttributeError, NativeLibraryError) as e:  # not loadable / missing symbols
                _last_reason = f"cannot load {target}: {e}"
    log.debug("native stitch library unavailable: %s", _last_reason)
    return None


def unavailable_reason() -> str | None:
    """Why the last `load_library()` returned None (None when it found the library)."""
    return _last_reason


def require_library(path: str | os.PathLike[str] | None = None) -> NativeLibrary:
    lib = load_library(path)
    if lib is None:
        raise NativeLibraryError(f"the native stitch library is unavailable: {_last_reason}")
    return lib


# --------------------------------------------------------------------------------------------------
# numpy inputs: the CPU kernel


def _rows_view(arr: np.ndarray, dim: int) -> tuple[np.ndarray, int]:
    """A (rows, dim) array whose rows the kernel can read in place, and its row stride in elements."""
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"a stitch source must be (rows, {dim}), got {arr.shape}")
    item = arr.itemsize
    if arr.shape[0] <= 1 and (arr.shape[1] <= 1 or arr.strides[1] == item):
        return arr, dim  # a single row: its row stride is never used
    if arr.strides[1] == item and arr.strides[0] > 0 and arr.strides[0] % item == 0:
        return arr, arr.strides[0] // item
    arr = np.ascontiguousarray(arr)
    return arr, dim


def _table_arrays(table: crte.RotationTable) -> tuple[np.ndarray, np.ndarray]:
    fa = np.ascontiguousarray(table.freqs_a, dtype=np.float64)
    fb = np.ascontiguousarray(table.freqs_b, dtype=np.float64)
    return fa, fb


class NativeStitch:
    """`stitch_numpy` on the C++ CPU kernel: same signature, same result (to the last bit at fp32 in
    practice; see docs/cpp_ext.md), one pass, `num_threads` threads (0 = every CPU this process may use).

    Inputs the kernel does not take (float64 or bfloat16 tables, a float64 output) go to `stitch_numpy`
    instead, so a call never fails for lack of a kernel variant.
    """

    name = "cpp"

    def __init__(self, lib: NativeLibrary | None = None, num_threads: int = 0) -> None:
        self.lib = lib if lib is not None else require_library()
        if num_threads < 0:
            raise ValueError("num_threads must be >= 0 (0 = all CPUs)")
        self.num_threads = num_threads

    def __call__(
        self, x: StitchInputs, out_dtype: np.dtype = np.float32, *, out: np.ndarray | None = None
    ) -> np.ndarray:
        """`out`: an (n, dim) C-contiguous array of `out_dtype` to write into (a reused prefill buffer
        saves the page faults of a fresh allocation: a third of the time at 9B sizes)."""
        out_dt = np.dtype(out_dtype)
        plan = x.plan
        dim = int(x.text_table.shape[1])
        n = len(plan)
        kind = np.ascontiguousarray(plan.kind, dtype=np.int8)
        used = [int(k) for k in np.unique(kind) if 0 <= k < NUM_KINDS]
        # Only the kinds the plan uses: like numpy, a missing or odd bank of an unused kind is no error
        # (a used kind without one is: KeyError from the kernel, as numpy's x.banks[k]).
        arrays: dict[int, np.ndarray] = {}
        for k in used:
            arr = x.text_table if k == Kind.TEXT else x.banks.get(k)
            if arr is not None:
                arrays[k] = np.asarray(arr)
        if out_dt not in _DTYPE_CODES or any(a.dtype not in _DTYPE_CODES for a in arrays.values()):
            log.debug(
                "native stitch: %s sources -> %s is not a kernel variant; using numpy",
                sorted({str(a.dtype) for a in arrays.values()}),
                out_dt,
            )
            return stitch_numpy(x, out_dt)

        keep: list[np.ndarray] = []  # everything the C call points into stays alive until it returns
        sources = _SourceArray()
        for k, arr in arrays.items():
            rows, stride = _rows_view(arr, dim)
            keep.append(rows)
            s = sources[k]
            s.data = rows.ctypes.data
            s.rows = rows.shape[0]
            s.row_stride = stride
            s.dtype = _DTYPE_CODES[rows.dtype]
            table = x.tables.get(k) if k != Kind.TEXT else None
            if table is not None:
                fa, fb = _table_arrays(table)
                keep += [fa, fb]
                s.len_a, s.len_b = fa.size, fb.size
                s.freqs_a = fa.ctypes.data if fa.size else None
                s.freqs_b = fb.ctypes.data if fb.size else None

        cols = [
            kind,
            np.ascontiguousarray(plan.src, dtype=np.int64),
            np.ascontiguousarray(plan.scale, dtype=np.float64),
            np.ascontiguousarray(plan.a, dtype=np.float64),
            np.ascontiguousarray(plan.b, dtype=np.float64),
        ]
        keep += cols
        p = PlanArrays(*(c.ctypes.data for c in cols), n)
        if out is None:
            out = np.empty((n, dim), dtype=out_dt)
        elif out.shape != (n, dim) or out.dtype != out_dt or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous ({n}, {dim}) {out_dt} array")
        self.lib.stitch_cpu(sources, p, dim, out.ctypes.data, dim, _DTYPE_CODES[out_dt], self.num_threads)
        return out


# --------------------------------------------------------------------------------------------------
# device buffers: the CUDA kernel


@dataclass(frozen=True)
class DeviceSource:
    """One kind's rows on the device: `rows` x `row_stride` elements of `dtype` (float32 / float16) at
    device address `ptr`, and optionally its CRTE frequency tables (float64 device arrays). A source
    without tables is a plain gather."""

    ptr: int
    rows: int
    dtype: np.dtype | type | str = np.float32
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
    out_dtype: np.dtype | type | str = np.float32,
    *,
    out_stride: int | None = None,
    stream: int = 0,
    error_flag: int = 0,
    lib: NativeLibrary | None = None,
) -> None:
    """Enqueue the fused stitch on `stream` (a cudaStream_t / CUstream as an int, 0 = the legacy
    default stream) and return without synchronising.

    `sources` maps a plan kind (vinci_edge.kinds.Kind) to its device rows:
    TEXT is the embedding table. `out` is the device address of the (n, dim) output (rows `out_stride`
    elements apart). Sizes, dtypes and table widths are checked here; a bad kind or src in the device
    plan zeroes that row and, when `error_flag` (a device int32, zeroed by the caller) is given, stores
    an error code there. The current CUDA device must be the one the buffers live on.

    Example with cuda-python, buffers already on the device (see tests/gpu/test_cuda_stitch.py):

        stitch_cuda({TEXT: DeviceSource(d_text, vocab), VIDEO: DeviceSource(d_video, rows,
                     freqs_a=d_freqs, len_a=64)}, DevicePlan(d_kind, d_src, d_scale, d_a, d_b, n),
                    dim, d_out, np.float16, stream=int(stream))
    """
    lib = lib if lib is not None else require_library()
    if not lib.has_cuda:
        raise NativeLibraryError(f"{lib.path} was built without CUDA (no nvcc at install time)")
    out_dt = np.dtype(out_dtype)
    if out_dt not in _DTYPE_CODES:
        raise ValueError(f"the CUDA stitch writes float32 or float16, not {out_dt}")
    arr = _SourceArray()
    for k, src in sources.items():
        if not 0 <= k < NUM_KINDS:
            raise ValueError(f"unknown plan kind {k}")
        dt = np.dtype(src.dtype)
        if dt not in _DTYPE_CODES:
            raise ValueError(f"the CUDA stitch reads float32 or float16 sources, not {dt}")
        s = arr[k]
        s.data = src.ptr or None
        s.rows = src.rows
        s.row_stride = dim if src.row_stride is None else src.row_stride
        s.dtype = _DTYPE_CODES[dt]
        s.len_a, s.len_b = src.len_a, src.len_b
        s.freqs_a = src.freqs_a or None
        s.freqs_b = src.freqs_b or None
    p = PlanArrays(plan.kind, plan.src, plan.scale, plan.a, plan.b, plan.n)
    stride = dim if out_stride is None else out_stride
    lib.stitch_cuda(arr, p, dim, out, stride, _DTYPE_CODES[out_dt], error_flag, stream)
