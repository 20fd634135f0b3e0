"""Device memory, one stream and CUDA graphs through cuda-python's runtime API: the thin layer the GPU
backends share. Nothing here decides anything; it allocates, copies, captures and frees, and turns a
failed CUDA call into `CudaError` naming the call.

cuda-python (`pip install 'vinci-edge[gpu]'`) is imported on first use, never at module import, so
the CPU runtime and its tests import this module freely.
"""

from __future__ import annotations

import ctypes
from types import ModuleType
from typing import Any

import numpy as np

from vinci_edge.errors import MissingDependencyError


class CudaError(RuntimeError):
    """A CUDA runtime call failed."""


def import_cuda_runtime() -> ModuleType:
    """cuda-python's runtime module (`cuda.bindings.runtime`; `cuda.cudart` before 12.6).
    ImportError when cuda-python is not installed."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # older cuda-python
        except ImportError as exc:
            raise ImportError("cuda-python is not installed (pip install 'vinci-edge[gpu]')") from exc
    return runtime


class Cuda:
    """cuda-python's runtime with errors raised: `cuda.call("cudaMalloc", n)` returns the value."""

    def __init__(self, rt: ModuleType | None = None) -> None:
        if rt is None:
            try:
                rt = import_cuda_runtime()
            except ImportError as exc:
                raise MissingDependencyError(str(exc), hint="pip install 'vinci-edge[gpu]'") from exc
        self.rt = rt

    def call(self, name: str, *args: Any) -> Any:
        err, *rest = getattr(self.rt, name)(*args)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise CudaError(f"{name} failed: {getattr(err, 'name', err)}")
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else tuple(rest)


class DeviceBuffer:
    """`nbytes` of device memory (cudaMalloc), freed by `free()` or when collected."""

    def __init__(self, cuda: Cuda, nbytes: int) -> None:
        self.cuda, self.nbytes = cuda, int(nbytes)
        self.ptr = int(cuda.call("cudaMalloc", max(self.nbytes, 1)))

    def free(self) -> None:
        if self.ptr:
            self.cuda.rt.cudaFree(self.ptr)
            self.ptr = 0

    def __del__(self) -> None:
        self.free()


class PinnedBuffer:
    """Page-locked host memory (cudaMallocHost) seen as a numpy array: copies from and to it can be
    asynchronous and can be captured in a CUDA graph (copies from pageable memory cannot)."""

    def __init__(self, cuda: Cuda, shape: tuple[int, ...], dtype: Any) -> None:
        self.cuda = cuda
        dt = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        self.ptr = int(cuda.call("cudaMallocHost", max(nbytes, 1)))
        raw = (ctypes.c_byte * max(nbytes, 1)).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=dt, count=nbytes // dt.itemsize).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.array = None
            self.cuda.rt.cudaFreeHost(self.ptr)
            self.ptr = 0

    def __del__(self) -> None:
        self.free()


class Stream:
    """One CUDA stream: the copies, TensorRT's enqueues, the stitch kernel and graph launches of one
    pipeline all go on it, in order, so nothing between them needs a synchronisation."""

    def __init__(self, cuda: Cuda) -> None:
        self.cuda = cuda
        self.handle = cuda.call("cudaStreamCreate")

    def __int__(self) -> int:
        return int(self.handle)

    def h2d(self, dst: int, src: np.ndarray) -> None:
        """Enqueue host -> device; `src` must stay alive and unchanged until the stream passes it."""
        if src.nbytes:
            kind = self.cuda.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
            self.cuda.call("cudaMemcpyAsync", dst, src.ctypes.data, src.nbytes, kind, self.handle)

    def d2h(self, dst: np.ndarray, src: int) -> None:
        if dst.nbytes:
            kind = self.cuda.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
            self.cuda.call("cudaMemcpyAsync", dst.ctypes.data, src, dst.nbytes, kind, self.handle)

    def d2d(self, dst: int, src: int, nbytes: int) -> None:
        if nbytes:
            kind = self.cuda.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
            self.cuda.call("cudaMemcpyAsync", dst, src, nbytes, kind, self.handle)

    def synchronize(self) -> None:
        self.cuda.call("cudaStreamSynchronize", self.handle)

    # ---- CUDA graphs ----------------------------------------------------------------------------------
    def capture(self, work: Any) -> Any:
        """Record what `work()` enqueues on this stream as an instantiated graph (not run)."""
        rt = self.cuda.rt
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self.cuda.call("cudaStreamBeginCapture", self.handle, mode)
        try:
            work()
        finally:
            graph = self.cuda.call("cudaStreamEndCapture", self.handle)
        try:
            return self.cuda.call("cudaGraphInstantiate", graph, 0)
        finally:
            rt.cudaGraphDestroy(graph)

    def launch(self, graph_exec: Any) -> None:
        self.cuda.call("cudaGraphLaunch", graph_exec, self.handle)

    def release_graph(self, graph_exec: Any) -> None:
        self.cuda.rt.cudaGraphExecDestroy(graph_exec)

    def destroy(self) -> None:
        if self.handle is not None:
            self.cuda.rt.cudaStreamDestroy(self.handle)
            self.handle = None
