"""Shared by the GPU backend tests: skip without the backend, and a device array that exports the CUDA
array interface (what CuPy / torch give), made with cuda-python alone."""

from __future__ import annotations

import numpy as np
import pytest

from vinci_edge.runtime.backends import Probe, probe, unavailable


def require(backend: str) -> Probe:
    p = probe()
    why = unavailable(backend, p)
    if why is not None:
        pytest.skip(why)
    return p


class CudaArray:
    """A numpy array copied to device memory, exported as `__cuda_array_interface__`."""

    def __init__(self, host: np.ndarray) -> None:
        from vinci_edge.runtime.device import Cuda, DeviceBuffer

        host = np.ascontiguousarray(host)
        self.cuda = Cuda()
        self.buffer = DeviceBuffer(self.cuda, host.nbytes)
        kind = self.cuda.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.cuda.call("cudaMemcpy", self.buffer.ptr, host.ctypes.data, host.nbytes, kind)
        self.shape, self.dtype = host.shape, host.dtype
        self.__cuda_array_interface__ = {
            "data": (self.buffer.ptr, False),
            "shape": host.shape,
            "typestr": host.dtype.str,
            "strides": None,
            "version": 3,
        }


def agreement(a: list[int], b: list[int]) -> float:
    n = min(len(a), len(b))
    return sum(x == y for x, y in zip(a[:n], b[:n])) / max(n, 1)
