"""libvinci_crte.so (built from cpp_ext/) through ctypes: finding and loading it, its ABI check, and
the C ABI's two structs with a public way to fill them. Torch-free, no Python headers at build time.

- `load_library()` finds and loads the library, or returns None and says why (`unavailable_reason`).
  Where it looks: `VINCI_EDGE_NATIVE_LIB` when set (an explicit override: another build, or a path that
  does not exist to turn the library off), else the package's `_native/` directory. A library with
  another ABI version (a stale build) counts as missing. `VINCI_EDGE_NO_NATIVE=1` turns it off too.
- `sources_array()` is the `vinci_crte_source[4]` both entry points take, indexed by plan kind;
  `Source.assign` points one entry at a kind's rows (numpy, device or torch memory: an address).
- `NativeLibrary.stitch_cpu` / `stitch_cuda` call the kernels and turn return codes into the
  exceptions numpy indexing would raise for the same mistake.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

log = logging.getLogger(__name__)

ABI_VERSION = 1  # cpp_ext/crte_capi.h VINCI_CRTE_ABI_VERSION
LIB_NAME = "libvinci_crte.so"
ENV_LIB = "VINCI_EDGE_NATIVE_LIB"
ENV_NO_NATIVE = "VINCI_EDGE_NO_NATIVE"
NATIVE_DIR = Path(__file__).resolve().parent.parent / "_native"
BUILD_STATUS = "BUILD_FAILED.txt"  # written by setup.py when it could not build the library

NUM_KINDS = 4  # sources[k] for k = Kind.TEXT .. Kind.IMAGE
F32, F16 = 0, 1  # vinci_crte dtype codes
DTYPE_CODES: dict[np.dtype, int] = {np.dtype(np.float32): F32, np.dtype(np.float16): F16}

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


def kernel_dtype(dtype: DTypeLike) -> int | None:
    """The kernel's code for a numpy dtype (float32 / float16), None for any other."""
    return DTYPE_CODES.get(np.dtype(dtype))


class Source(ctypes.Structure):
    """vinci_crte_source: one kind's rows and, optionally, its CRTE frequency tables (float64)."""

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

    def assign(
        self,
        data: int,
        rows: int,
        row_stride: int,
        dtype_code: int,
        *,
        freqs_a: int = 0,
        len_a: int = 0,
        freqs_b: int = 0,
        len_b: int = 0,
    ) -> None:
        """Point this entry at `rows` rows, `row_stride` elements apart, at address `data` (host or
        device, as the entry point expects); frequency tables are float64 arrays of len_a / len_b
        values (0 / 0: a plain gather). Address 0 is stored as NULL."""
        self.data = data or None
        self.rows = rows
        self.row_stride = row_stride
        self.dtype = dtype_code
        self.len_a, self.len_b = len_a, len_b
        self.freqs_a = freqs_a or None
        self.freqs_b = freqs_b or None


class PlanArrays(ctypes.Structure):
    """vinci_crte_plan: addresses of the n-long kind (int8), src (int64), scale / a / b (float64)."""

    _fields_ = [
        ("kind", ctypes.c_void_p),
        ("src", ctypes.c_void_p),
        ("scale", ctypes.c_void_p),
        ("a", ctypes.c_void_p),
        ("b", ctypes.c_void_p),
        ("n", ctypes.c_int64),
    ]


def sources_array() -> ctypes.Array[Source]:
    """A zeroed `vinci_crte_source[4]`, indexed by plan kind: every kind absent until assigned."""
    return (Source * NUM_KINDS)()


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
        """Raise for a return code (or a device error flag) other than OK."""
        if rc != OK:
            exc = _ERRORS.get(rc, RuntimeError)
            detail = f": {self._lib.vinci_crte_cuda_last_error().decode()}" if rc == ERR_CUDA else ""
            raise exc(f"{what}: {self.strerror(rc)}{detail} (code {rc})")

    def stitch_cpu(
        self,
        sources: ctypes.Array[Source],
        plan: PlanArrays,
        dim: int,
        out: int,
        out_stride: int,
        out_dtype: int,
        num_threads: int,
    ) -> None:
        """vinci_crte_stitch_cpu on host addresses; returns when `out` is written."""
        rc = self._lib.vinci_crte_stitch_cpu(
            sources, ctypes.byref(plan), dim, out, out_stride, out_dtype, num_threads
        )
        self.check(rc, "native stitch (CPU)")

    def stitch_cuda(
        self,
        sources: ctypes.Array[Source],
        plan: PlanArrays,
        dim: int,
        out: int,
        out_stride: int,
        out_dtype: int,
        error_flag: int,
        stream: int,
    ) -> None:
        """vinci_crte_stitch_cuda on device addresses; enqueued on `stream`, not synchronised."""
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
    """The native library, or NativeLibraryError saying why not."""
    lib = load_library(path)
    if lib is None:
        raise NativeLibraryError(f"the native stitch library is unavailable: {_last_reason}")
    return lib
