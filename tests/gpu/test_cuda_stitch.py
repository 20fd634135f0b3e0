"""The CUDA stitch kernel on a real device against `stitch_numpy`: through cuda-python device buffers
(`stitch_cuda`), and through `CudaStitch`, the host-to-device path `select_stitch("cuda")` returns.

Needs a GPU: cuda-python (`pip install vinci-edge[gpu]`), a driver, a visible device, and a
libvinci_crte.so built with its CUDA part. Without any of them every test here is SKIPPED, with the
reason (pytest -ra lists it); nothing fails for lack of hardware.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import numpy as np
import pytest

from vinci_edge import crte
from vinci_edge import timeline as tl
from vinci_edge.config import TimeEmbedding
from vinci_edge.kinds import Kind
from vinci_edge.plan import Plan, TextItem, VideoItem, layout
from vinci_edge.presets import preset_config
from vinci_edge.stitch import library as native
from vinci_edge.stitch.cuda import DevicePlan, DeviceSource, stitch_cuda
from vinci_edge.stitch.cuda_host import CudaStitch
from vinci_edge.stitch.inputs import StitchInputs
from vinci_edge.stitch.numpy_stitch import stitch_numpy
from vinci_edge.stitch.select import select_stitch

pytestmark = pytest.mark.gpu

MTCT = TimeEmbedding(branch="mtct", dim=128, max_time=3600.0, period_mode="shortest")  # rot 64
AXIAL = TimeEmbedding(
    branch="axial", dim=8, max_time=None, freqs_for="pixel", period_fix="False", max_freq=256.0
)


def _import_cuda() -> tuple[ModuleType, ModuleType]:
    try:
        from cuda.bindings import driver, runtime  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cuda as driver  # older cuda-python
            from cuda import cudart as runtime
        except ImportError:
            pytest.skip("cuda-python is not installed (pip install 'vinci-edge[gpu]')")
    return driver, runtime


@pytest.fixture(scope="module")
def cudart() -> ModuleType:
    driver, runtime = _import_cuda()
    try:
        (err,) = driver.cuInit(0)
    except Exception as e:  # cuda-python 13 raises when libcuda.so is absent
        pytest.skip(f"no CUDA driver: {type(e).__name__}: {e}")
    if err != driver.CUresult.CUDA_SUCCESS:
        pytest.skip(f"no CUDA driver: cuInit returned {err}")
    err, count = runtime.cudaGetDeviceCount()
    if err != runtime.cudaError_t.cudaSuccess or count == 0:
        pytest.skip(f"no CUDA device (cudaGetDeviceCount: {err}, {count})")
    return runtime


@pytest.fixture(scope="module")
def lib(cudart) -> native.NativeLibrary:
    found = native.load_library()
    if found is None:
        pytest.skip(f"native stitch library not built: {native.unavailable_reason()}")
    if not found.has_cuda:
        pytest.skip(f"{found.path} was built without its CUDA part (no nvcc at install time)")
    if found.cuda_device_count() <= 0:
        pytest.skip("the library's CUDA runtime sees no device")
    return found


class Device:
    """Device buffers from numpy arrays, freed at the end of the test."""

    def __init__(self, rt: ModuleType) -> None:
        self.rt = rt
        self.ptrs: list[int] = []

    def check(self, result: tuple) -> object:
        err, *rest = result
        assert err == self.rt.cudaError_t.cudaSuccess, err
        return rest[0] if rest else None

    def alloc(self, nbytes: int) -> int:
        ptr = int(self.check(self.rt.cudaMalloc(max(nbytes, 16))))
        self.ptrs.append(ptr)
        return ptr

    def put(self, arr: np.ndarray) -> int:
        arr = np.ascontiguousarray(arr)
        ptr = self.alloc(arr.nbytes)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.check(self.rt.cudaMemcpy(ptr, arr.ctypes.data, arr.nbytes, kind))
        return ptr

    def get(self, ptr: int, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        out = np.empty(shape, dtype)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.check(self.rt.cudaMemcpy(out.ctypes.data, ptr, out.nbytes, kind))
        return out

    def free(self) -> None:
        for p in self.ptrs:
            self.rt.cudaFree(p)


@pytest.fixture
def dev(cudart) -> Iterator[Device]:
    d = Device(cudart)
    yield d
    d.free()


def run_cuda(
    dev: Device,
    x: StitchInputs,
    out_dtype: type,
    out_pad: int = 0,
    error_flag: bool = False,
) -> tuple[np.ndarray, int]:
    """x on the device, the kernel on a fresh stream, the result back (and the error flag)."""
    plan, dim = x.plan, x.text_table.shape[1]
    sources = {Kind.TEXT: DeviceSource(dev.put(x.text_table), x.text_table.shape[0], x.text_table.dtype)}
    for k, bank in x.banks.items():
        table = x.tables.get(k)
        src = dict(ptr=dev.put(bank), rows=bank.shape[0], dtype=bank.dtype)
        if table is not None:
            src.update(freqs_a=dev.put(table.freqs_a), len_a=table.freqs_a.size)
            if table.freqs_b.size:
                src.update(freqs_b=dev.put(table.freqs_b), len_b=table.freqs_b.size)
        sources[k] = DeviceSource(**src)
    dplan = DevicePlan(
        kind=dev.put(plan.kind.astype(np.int8)),
        src=dev.put(plan.src.astype(np.int64)),
        scale=dev.put(plan.scale.astype(np.float64)),
        a=dev.put(plan.a.astype(np.float64)),
        b=dev.put(plan.b.astype(np.float64)),
        n=len(plan),
    )
    stride = dim + out_pad
    out = dev.alloc(len(plan) * stride * np.dtype(out_dtype).itemsize)
    flag = dev.put(np.zeros(1, np.int32)) if error_flag else 0
    stream = dev.check(dev.rt.cudaStreamCreate())
    try:
        stitch_cuda(
            sources, dplan, dim, out, out_dtype, out_stride=stride, stream=int(stream), error_flag=flag
        )
        dev.check(dev.rt.cudaStreamSynchronize(stream))
    finally:
        dev.rt.cudaStreamDestroy(stream)
    got = dev.get(out, (len(plan), stride), out_dtype)[:, :dim]
    return got, int(dev.get(flag, (1,), np.int32)[0]) if error_flag else 0


def assert_matches(got: np.ndarray, ref: np.ndarray) -> None:
    if ref.dtype == np.float16:
        step = np.spacing(np.abs(ref)).astype(np.float64)
        assert (np.abs(got.astype(np.float64) - ref.astype(np.float64)) <= step).all()
    else:
        # device cos/sin may differ from the host libm's by an ulp of a double: invisible at fp32
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7 * float(np.abs(ref).max(initial=1.0)))


def random_inputs(rng: np.random.Generator, dim: int, dtype: type, n: int = 700) -> StitchInputs:
    kind = rng.integers(0, 4, n).astype(np.int8)
    src = np.where(kind == Kind.TEXT, rng.integers(0, 97, n), rng.integers(0, 60, n)).astype(np.int64)
    plan = Plan(
        kind, src, rng.standard_normal(n), rng.uniform(0, 3600, n), rng.uniform(-1, 1, n), np.zeros(n), []
    )
    banks = {k: rng.standard_normal((60, dim)).astype(dtype) for k in (Kind.VIDEO, Kind.AUDIO, Kind.IMAGE)}
    tables = {Kind.VIDEO: crte.rotation_table(MTCT), Kind.AUDIO: crte.rotation_table(AXIAL), Kind.IMAGE: None}
    return StitchInputs(plan, rng.standard_normal((97, dim)).astype(dtype), banks, tables)


@pytest.mark.parametrize("dim", [3584, 130, 129], ids=["9b", "even", "odd-unaligned"])
@pytest.mark.parametrize(
    "in_dtype,out_dtype",
    [(np.float32, np.float32), (np.float32, np.float16), (np.float16, np.float32), (np.float16, np.float16)],
)
def test_cuda_matches_numpy(lib, dev, dim, in_dtype, out_dtype):
    x = random_inputs(np.random.default_rng(dim), dim, in_dtype)
    got, _ = run_cuda(dev, x, out_dtype)
    assert_matches(got, stitch_numpy(x, out_dtype))


def test_cuda_plan_from_the_tiny_preset_with_padded_output(lib, dev):
    cfg = preset_config("tiny")
    video = tl.VideoTimeline(tl.sample_frame_indices(100, 4), 10.0, 100, 4)
    plan = layout(
        [TextItem([1]), VideoItem(video, tl.audio_timeline(16000 * 10, cfg)), TextItem([2])],
        cfg,
        lambda s: [10] if s == "\n" else [11],
    )
    rng = np.random.default_rng(0)
    d = cfg.hidden_size
    banks = {
        k: rng.standard_normal((max(plan.bank_rows.get(k, 0), 1), d)).astype(np.float32) for k in (1, 2, 3)
    }
    tables = {
        Kind.VIDEO: crte.rotation_table(cfg.video_encoder.time),
        Kind.AUDIO: crte.rotation_table(cfg.sound_encoder.time),
        Kind.IMAGE: None,
    }
    x = StitchInputs(plan, rng.standard_normal((1024, d)).astype(np.float32), banks, tables)
    got, _ = run_cuda(dev, x, np.float32, out_pad=3)  # rows 67 apart: the scalar path
    assert_matches(got, stitch_numpy(x, np.float32))


def test_cuda_bad_src_zeroes_the_row_and_sets_the_flag(lib, dev):
    x = random_inputs(np.random.default_rng(1), 64, np.float32, n=50)
    src = x.plan.src.copy()
    bad = int(np.flatnonzero(x.plan.kind == Kind.VIDEO)[0])
    src[bad] = 10_000
    plan = Plan(x.plan.kind, src, x.plan.scale, x.plan.a, x.plan.b, x.plan.time, [])
    got, flag = run_cuda(
        dev, StitchInputs(plan, x.text_table, x.banks, x.tables), np.float32, error_flag=True
    )
    assert flag == native.ERR_INDEX
    assert not got[bad].any()
    ok = np.arange(50) != bad
    assert_matches(got[ok], stitch_numpy(x, np.float32)[ok])


def test_cuda_empty_plan_launches_nothing(lib, dev):
    x = random_inputs(np.random.default_rng(2), 64, np.float32, n=0)
    got, _ = run_cuda(dev, x, np.float16)
    assert got.shape == (0, 64)


# --------------------------------------------------------------------------------------------------
# CudaStitch: numpy in, the kernel on the device, numpy out


def test_select_stitch_cuda_takes_the_device_here(lib):
    choice = select_stitch("cuda")
    assert choice.name == "cuda" and isinstance(choice.stitch, CudaStitch) and choice.note is None


@pytest.mark.parametrize("dim", [3584, 129], ids=["9b", "odd-unaligned"])
@pytest.mark.parametrize(
    "in_dtype,out_dtype",
    [(np.float32, np.float32), (np.float32, np.float16), (np.float16, np.float32), (np.float16, np.float16)],
)
def test_host_to_device_stitch_matches_numpy(lib, dim, in_dtype, out_dtype):
    x = random_inputs(np.random.default_rng(dim + 1), dim, in_dtype)
    assert_matches(CudaStitch(lib)(x, out_dtype), stitch_numpy(x, out_dtype))


def test_host_to_device_stitch_on_a_preset_plan_with_a_large_vocabulary(lib):
    cfg = preset_config("tiny")
    video = tl.VideoTimeline(tl.sample_frame_indices(100, 4), 10.0, 100, 4)
    plan = layout(
        [TextItem([1]), VideoItem(video, tl.audio_timeline(16000 * 10, cfg)), TextItem([2, 40_000])],
        cfg,
        lambda s: [10] if s == "\n" else [11],
    )
    rng = np.random.default_rng(3)
    d = cfg.hidden_size
    rows = {k: max(plan.bank_rows.get(k, 0), 1) for k in (Kind.VIDEO, Kind.AUDIO, Kind.IMAGE)}
    banks = {k: rng.standard_normal((n, d)).astype(np.float16) for k, n in rows.items()}
    tables = {
        Kind.VIDEO: crte.rotation_table(cfg.video_encoder.time),
        Kind.AUDIO: crte.rotation_table(cfg.sound_encoder.time),
        Kind.IMAGE: None,
    }
    # 50000 text rows, of which the plan reads a handful: only those are copied to the device
    x = StitchInputs(plan, rng.standard_normal((50_000, d)).astype(np.float16), banks, tables)
    assert_matches(CudaStitch(lib)(x, np.float16), stitch_numpy(x, np.float16))


def test_host_to_device_stitch_refuses_a_bad_src_on_the_host(lib):
    x = random_inputs(np.random.default_rng(4), 64, np.float32, n=50)
    src = x.plan.src.copy()
    src[int(np.flatnonzero(x.plan.kind == Kind.VIDEO)[0])] = 10_000
    plan = Plan(x.plan.kind, src, x.plan.scale, x.plan.a, x.plan.b, x.plan.time, [])
    with pytest.raises(IndexError):
        CudaStitch(lib)(StitchInputs(plan, x.text_table, x.banks, x.tables), np.float32)
