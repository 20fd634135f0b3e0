"""The C++ CPU kernel on numpy inputs: `NativeStitch`, a drop-in for `stitch_numpy`."""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import DTypeLike

from vinci_edge.crte import RotationTable
from vinci_edge.kinds import Kind
from vinci_edge.stitch.inputs import StitchInputs
from vinci_edge.stitch.library import (
    NUM_KINDS,
    NativeLibrary,
    PlanArrays,
    kernel_dtype,
    require_library,
    sources_array,
)
from vinci_edge.stitch.numpy_stitch import stitch_numpy

log = logging.getLogger(__name__)


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
        self, x: StitchInputs, out_dtype: DTypeLike = np.float32, *, out: np.ndarray | None = None
    ) -> np.ndarray:
        """`out`: an (n, dim) C-contiguous array of `out_dtype` to write into (a reused prefill buffer
        saves the page faults of a fresh allocation: a third of the time at 9B sizes)."""
        out_dt = np.dtype(out_dtype)
        plan = x.plan
        dim = int(x.text_table.shape[1])
        n = len(plan)
        kind = np.ascontiguousarray(plan.kind, dtype=np.int8)
        arrays = _used_sources(x, kind)
        out_code = kernel_dtype(out_dt)
        if out_code is None or any(kernel_dtype(a.dtype) is None for a in arrays.values()):
            log.debug(
                "native stitch: %s sources -> %s is not a kernel variant; using numpy",
                sorted({str(a.dtype) for a in arrays.values()}),
                out_dt,
            )
            return stitch_numpy(x, out_dt)

        keep: list[np.ndarray] = []  # everything the C call points into stays alive until it returns
        sources = sources_array()
        for k, arr in arrays.items():
            rows, stride = _rows_view(arr, dim)
            fa, fb = _table_arrays(x.tables.get(k) if k != Kind.TEXT else None)
            keep += [rows, fa, fb]
            sources[k].assign(
                rows.ctypes.data,
                rows.shape[0],
                stride,
                kernel_dtype(rows.dtype),
                freqs_a=fa.ctypes.data if fa.size else 0,
                len_a=fa.size,
                freqs_b=fb.ctypes.data if fb.size else 0,
                len_b=fb.size,
            )
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
        self.lib.stitch_cpu(sources, p, dim, out.ctypes.data, dim, out_code, self.num_threads)
        return out


def _used_sources(x: StitchInputs, kind: np.ndarray) -> dict[int, np.ndarray]:
    """The source of every kind the plan uses (the text table for TEXT). Like numpy, a missing or odd
    bank of an unused kind is no error; a used kind without one is (the kernel's KeyError, as numpy's
    x.banks[k]). Kinds outside 0..3 are left to the kernel to refuse."""
    arrays: dict[int, np.ndarray] = {}
    for k in (int(k) for k in np.unique(kind) if 0 <= k < NUM_KINDS):
        arr = x.text_table if k == Kind.TEXT else x.banks.get(k)
        if arr is not None:
            arrays[k] = np.asarray(arr)
    return arrays


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


def _table_arrays(table: RotationTable | None) -> tuple[np.ndarray, np.ndarray]:
    """The table's frequencies as contiguous float64 (two empty arrays for a plain gather)."""
    if table is None:
        return np.zeros(0, np.float64), np.zeros(0, np.float64)
    fa = np.ascontiguousarray(table.freqs_a, dtype=np.float64)
    fb = np.ascontiguousarray(table.freqs_b, dtype=np.float64)
    return fa, fb
