"""Arrays that already live on the GPU, taken without a host copy: DLPack and the CUDA array interface.

A stage input may be a numpy array (copied to the device) or any object that exports device memory:
`__cuda_array_interface__` (CuPy, Numba, PyTorch) or `__dlpack__` (those, JAX, and decoders that hand
frames over on the GPU). `device_view(obj)` returns its address, shape, dtype and device without
touching the data; the TensorRT and ONNX Runtime CUDA backends bind that address directly. The
producer keeps ownership: the view holds a reference to it (and, for DLPack, calls the capsule's
deleter when released) until the stage has run.

Only dense, C-contiguous arrays are taken (TensorRT binds no strides); anything else is refused with
a message saying so, rather than copied behind the caller's back.

Pure Python (ctypes reads the DLPack struct), so it is tested on the CPU with numpy's own `__dlpack__`.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any

import numpy as np

KDL_CPU = 1
KDL_CUDA = 2
KDL_CUDA_HOST = 3
KDL_CUDA_MANAGED = 13

_DL_CODES = {0: "i", 1: "u", 2: "f", 4: "b"}  # kDLInt, kDLUInt, kDLFloat, kDLBool (bfloat 4 absent)
_CAPSULE_NAME = b"dltensor"
_USED_NAME = b"used_dltensor"


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(_DLManagedTensor))
_DLManagedTensor._fields_ = [
    ("dl_tensor", _DLTensor),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", _DELETER),
]

_api = ctypes.pythonapi
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_IsValid.restype = ctypes.c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_SetName.restype = ctypes.c_int
_api.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]


class DeviceArrayError(ValueError):
    """An object that exports memory in a form a stage cannot bind (strided, wrong device, ...)."""


@dataclass
class DeviceView:
    """An array's memory as a stage binds it: address, shape, dtype, and where it lives."""

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    device_type: int  # KDL_CUDA, KDL_CPU, ...
    device_id: int = 0
    owner: Any = field(default=None, repr=False)  # keeps the producer's memory alive
    _release: Any = field(default=None, repr=False)

    @property
    def on_gpu(self) -> bool:
        return self.device_type in (KDL_CUDA, KDL_CUDA_MANAGED)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def release(self) -> None:
        """Give the memory back to its producer (DLPack: the capsule's deleter). Idempotent."""
        if self._release is not None:
            self._release()
            self._release = None
        self.owner = None

    def __del__(self) -> None:
        self.release()


def exports_device_memory(obj: Any) -> bool:
    return hasattr(obj, "__cuda_array_interface__") or hasattr(obj, "__dlpack__")


def device_view(obj: Any) -> DeviceView:
    """The memory of `obj` (see the module docstring). DeviceArrayError when it is not dense."""
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is not None:
        return _from_cai(obj, cai)
    if hasattr(obj, "__dlpack__"):
        return _from_dlpack(obj)
    raise DeviceArrayError(f"{type(obj).__name__} exports neither DLPack nor the CUDA array interface")


def _from_cai(obj: Any, cai: dict[str, Any]) -> DeviceView:
    shape = tuple(int(n) for n in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    strides = cai.get("strides")
    if strides is not None and tuple(strides) != _dense_strides(shape, dtype.itemsize):
        raise DeviceArrayError(
            f"the array of shape {shape} is strided {tuple(strides)}: pass a contiguous one"
        )
    ptr = int(cai["data"][0])
    return DeviceView(ptr, shape, dtype, KDL_CUDA, 0, owner=obj)


def _from_dlpack(obj: Any) -> DeviceView:
    device_type, device_id = (int(x) for x in obj.__dlpack_device__())
    kwargs: dict[str, Any] = {}
    if device_type in (KDL_CUDA, KDL_CUDA_MANAGED):
        kwargs["stream"] = None  # the producer's stream order is the caller's business: no sync
    try:
        capsule = obj.__dlpack__(**kwargs)
    except TypeError:
        capsule = obj.__dlpack__()
    if not _api.PyCapsule_IsValid(capsule, _CAPSULE_NAME):
        raise DeviceArrayError("the DLPack capsule was already consumed")
    managed_ptr = _api.PyCapsule_GetPointer(capsule, _CAPSULE_NAME)
    managed = _DLManagedTensor.from_address(managed_ptr)
    t = managed.dl_tensor
    shape = tuple(t.shape[i] for i in range(t.ndim))
    if t.dtype.lanes != 1 or t.dtype.code not in _DL_CODES:
        raise DeviceArrayError(f"DLPack dtype code {t.dtype.code} x{t.dtype.lanes} is not supported")
    dtype = np.dtype(f"{_DL_CODES[t.dtype.code]}{t.dtype.bits // 8}")
    if bool(t.strides):
        strides = tuple(t.strides[i] * dtype.itemsize for i in range(t.ndim))
        if strides != _dense_strides(shape, dtype.itemsize) and 0 not in shape:
            raise DeviceArrayError(f"the array of shape {shape} is strided: pass a contiguous one")
    # Consumed: rename the capsule so its destructor leaves the tensor to us, and call the deleter
    # when the view is released.
    _api.PyCapsule_SetName(capsule, _USED_NAME)
    deleter = managed.deleter

    def release() -> None:
        if deleter:
            deleter(ctypes.cast(managed_ptr, ctypes.POINTER(_DLManagedTensor)))

    ptr = (t.data or 0) + int(t.byte_offset)
    return DeviceView(ptr, shape, dtype, device_type, device_id, owner=obj, _release=release)


def _dense_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    out, step = [], itemsize
    for n in reversed(shape):
        out.append(step)
        step *= max(n, 1)
    return tuple(reversed(out))
