"""The native stitch (cpp_ext/, libvinci_crte.so) against the numpy reference `stitch_numpy`.

The kernel tests skip, saying why, when the library was not built (no cmake / compiler at install
time); set VINCI_EDGE_REQUIRE_NATIVE=1 to make that a failure instead (CI on a machine that builds it).
"""

from __future__ import annotations

import ctypes
import enum
import importlib.metadata
import os
import shutil
import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vinci_edge import crte
from vinci_edge import timeline as tl
from vinci_edge.config import TimeEmbedding
from vinci_edge.kinds import Kind
from vinci_edge.plan import AudioItem, ImageItem, Item, Plan, TextItem, VideoItem, layout
from vinci_edge.presets import preset_config
from vinci_edge.stitch import library as native
from vinci_edge.stitch.cpu import NativeStitch
from vinci_edge.stitch.cuda import DevicePlan, DeviceSource, stitch_cuda
from vinci_edge.stitch.cuda_host import CudaStitch, compact_inputs, cuda_unavailable_reason
from vinci_edge.stitch.inputs import StitchInputs
from vinci_edge.stitch.numpy_stitch import stitch_numpy
from vinci_edge.stitch.select import select_stitch

ROOT = Path(__file__).resolve().parents[1]
CUDA_ARCHS = (87, 89, 90, 100, 110)

MTCT = TimeEmbedding(branch="mtct", dim=32, max_time=3600.0, period_mode="shortest")  # rot 16
MTCT_LONGEST = TimeEmbedding(branch="mtct", dim=8, max_time=100.0, period_mode="longest")  # rot 4
AXIAL = TimeEmbedding(  # rot 2 * 8 = 16, both axes
    branch="axial", dim=8, max_time=None, freqs_for="pixel", period_fix="False", max_freq=256.0
)
AXIAL_LANG = TimeEmbedding(
    branch="axial", dim=6, max_time=3600.0, freqs_for="lang", period_fix="True", angle_max_time=3600.0
)  # rot 12


@pytest.fixture(scope="module")
def lib() -> native.NativeLibrary:
    found = native.load_library()
    if found is None:
        why = native.unavailable_reason()
        if os.environ.get("VINCI_EDGE_REQUIRE_NATIVE") == "1":
            pytest.fail(f"VINCI_EDGE_REQUIRE_NATIVE=1 but the native library is unavailable: {why}")
        pytest.skip(f"native stitch library not built: {why}")
    return found


def random_inputs(
    rng: np.random.Generator,
    counts: dict[int, int],
    dim: int,
    tables: dict[int, crte.RotationTable | None],
    dtype: type = np.float32,
    bank_rows: int = 50,
    vocab: int = 97,
) -> StitchInputs:
    """A shuffled plan with counts[kind] positions of each kind, random rows and CRTE coordinates
    (times up to an hour: large angles)."""
    kind = np.concatenate([np.full(c, k, np.int8) for k, c in counts.items()] or [np.zeros(0, np.int8)])
    rng.shuffle(kind)
    n = kind.size
    src = np.where(kind == Kind.TEXT, rng.integers(0, vocab, n), rng.integers(0, bank_rows, n)).astype(
        np.int64
    )
    plan = Plan(
        kind=kind,
        src=src,
        scale=rng.standard_normal(n) * 3,
        a=rng.uniform(0, 3600, n),
        b=rng.uniform(-1, 1, n),
        time=np.zeros(n),
        runs=[],
    )
    banks = {
        k: rng.standard_normal((bank_rows, dim)).astype(dtype) for k in (Kind.VIDEO, Kind.AUDIO, Kind.IMAGE)
    }
    return StitchInputs(plan, rng.standard_normal((vocab, dim)).astype(dtype), banks, tables)


def assert_matches(got: np.ndarray, ref: np.ndarray) -> None:
    """fp32: relative error <= 1e-6 (of the row scale); fp16: within one fp16 rounding step."""
    assert got.dtype == ref.dtype and got.shape == ref.shape
    if ref.dtype == np.float16:
        step = np.spacing(np.abs(ref)).astype(np.float64)
        assert (np.abs(got.astype(np.float64) - ref.astype(np.float64)) <= step).all()
    else:
        scale = max(float(np.abs(ref).max(initial=0.0)), 1e-30)
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7 * scale)


def run_both(lib: native.NativeLibrary, x: StitchInputs, out_dtype: type, threads: int = 1) -> np.ndarray:
    ref = stitch_numpy(x, out_dtype)
    got = NativeStitch(lib, num_threads=threads)(x, out_dtype)
    assert_matches(got, ref)
    return got


# --------------------------------------------------------------------------------------------------
# the library itself


def test_library_identity(lib):
    assert lib.abi_version == native.ABI_VERSION
    assert lib.version == importlib.metadata.version("vinci-edge")
    assert lib.hardware_threads >= 1
    count = lib.cuda_device_count()  # -1 without CUDA part or driver: never a crash
    assert count >= -1
    if lib.has_cuda:
        assert [int(a) for a in lib.cuda_archs] == sorted(int(a) for a in lib.cuda_archs)
    else:
        assert lib.cuda_archs == [] and count == -1


# --------------------------------------------------------------------------------------------------
# equal to stitch_numpy


@pytest.mark.parametrize(
    "te", [MTCT, MTCT_LONGEST, AXIAL, AXIAL_LANG], ids=["mtct", "longest", "axial", "lang"]
)
@pytest.mark.parametrize("dim", [37, 64, 16], ids=["odd", "wide", "rot==D"])
@pytest.mark.parametrize(
    "in_dtype,out_dtype",
    [(np.float32, np.float32), (np.float32, np.float16), (np.float16, np.float32), (np.float16, np.float16)],
    ids=["f32-f32", "f32-f16", "f16-f32", "f16-f16"],
)
def test_matches_numpy_both_branches(lib, te, dim, in_dtype, out_dtype):
    table = crte.rotation_table(te)
    if table.rot_dim > dim:
        pytest.skip("rotation wider than the embeddings")
    if dim == 16:
        assert table.rot_dim in (4, 12, 16)  # rot == D for the 16-wide tables
    rng = np.random.default_rng(dim * 7 + table.rot_dim)
    other = crte.rotation_table(MTCT if te.branch == "axial" else AXIAL)
    tables = {Kind.VIDEO: table, Kind.AUDIO: other if other.rot_dim <= dim else None, Kind.IMAGE: None}
    x = random_inputs(
        rng, {Kind.TEXT: 31, Kind.VIDEO: 57, Kind.AUDIO: 43, Kind.IMAGE: 9}, dim, tables, in_dtype
    )
    run_both(lib, x, out_dtype)


def test_fp32_is_bit_exact_in_practice(lib):
    # Same double arithmetic, same rounding: the kernel reproduces numpy to the bit (the tolerance
    # elsewhere only allows for a libm that rounds cos/sin differently from numpy's).
    rng = np.random.default_rng(1)
    tables = {Kind.VIDEO: crte.rotation_table(MTCT), Kind.AUDIO: crte.rotation_table(AXIAL), Kind.IMAGE: None}
    x = random_inputs(rng, {Kind.TEXT: 50, Kind.VIDEO: 300, Kind.AUDIO: 300, Kind.IMAGE: 20}, 96, tables)
    got = NativeStitch(lib)(x, np.float32)
    ref = stitch_numpy(x, np.float32)
    assert np.count_nonzero(got != ref) <= got.size * 1e-4


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # numpy's side, on purpose
def test_rotation_is_rounded_once_from_double(lib):
    # Rows whose rotation turns a pair by exactly pi/2 (x0, x1) -> (-x1, x0) in float64, then one
    # rounding: fp16 output from fp32 input must equal numpy's float64 -> float16 cast bit for bit.
    rng = np.random.default_rng(2)
    table = crte.RotationTable(np.array([np.pi / 2, np.pi / 2]), np.zeros(0))
    specials = np.array(
        [
            65504,
            65519.99,
            65520,
            1e-8,
            2.0**-24,
            2.0**-25,
            3 * 2.0**-26,
            6.1e-5,
            -0.0,
            1 + 2.0**-11,
            1 + 3 * 2.0**-11,
        ],
        np.float32,
    )
    bank = rng.standard_normal((40, 8)).astype(np.float32)
    bank[: specials.size, 0] = specials
    bank[: specials.size, 1] = specials[::-1]
    n = 40
    plan = Plan(
        np.full(n, Kind.VIDEO, np.int8), np.arange(n), np.ones(n), np.ones(n), np.zeros(n), np.zeros(n), []
    )
    x = StitchInputs(plan, np.zeros((1, 8), np.float32), {Kind.VIDEO: bank}, {Kind.VIDEO: table})
    for out_dtype in (np.float16, np.float32):
        got = NativeStitch(lib)(x, out_dtype)
        ref = stitch_numpy(x, out_dtype)
        np.testing.assert_array_equal(got, ref)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_fp16_conversions_are_exact_for_every_value(lib):
    # Plain gathers (IMAGE: no table): every fp16 bit pattern -> fp32, and awkward fp32 values -> fp16
    # (ties, subnormals, overflow, NaN, -0), compared bit for bit with numpy's casts.
    every = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).reshape(-1, 64)
    n = every.shape[0]
    plan = Plan(
        np.full(n, Kind.IMAGE, np.int8), np.arange(n), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), []
    )
    x = StitchInputs(plan, np.zeros((1, 64), np.float16), {Kind.IMAGE: every}, {Kind.IMAGE: None})
    got = NativeStitch(lib)(x, np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), every.astype(np.float32).view(np.uint32))

    rng = np.random.default_rng(3)
    halves = np.arange(0, 65536, 7, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    halves = halves[np.isfinite(halves)]
    mids = (halves[:-1].astype(np.float64) + halves[1:].astype(np.float64)) / 2  # exact ties
    vals = np.concatenate(
        [
            halves,
            mids.astype(np.float32),
            np.nextafter(mids.astype(np.float32), np.float32(np.inf)),
            rng.standard_normal(4000).astype(np.float32) * np.float32(1e-6),
            rng.standard_normal(4000).astype(np.float32) * np.float32(3e4),
            np.array([np.inf, -np.inf, np.nan, 65520.0, 65519.996, 1e30, -1e-30, 2.0**-25, -0.0], np.float32),
        ]
    )
    vals = vals[: vals.size // 32 * 32].reshape(-1, 32)
    n = vals.shape[0]
    plan = Plan(
        np.full(n, Kind.IMAGE, np.int8), np.arange(n), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), []
    )
    x = StitchInputs(plan, np.zeros((1, 32), np.float32), {Kind.IMAGE: vals}, {Kind.IMAGE: None})
    got = NativeStitch(lib)(x, np.float16)
    ref = stitch_numpy(x, np.float16)
    finite = ~np.isnan(ref)
    np.testing.assert_array_equal(got.view(np.uint16)[finite], ref.view(np.uint16)[finite])
    assert np.isnan(got[~finite]).all()


# --------------------------------------------------------------------------------------------------
# shapes and plans


def test_empty_kinds_and_empty_plan(lib):
    rng = np.random.default_rng(4)
    tables = {Kind.VIDEO: crte.rotation_table(MTCT), Kind.AUDIO: crte.rotation_table(MTCT), Kind.IMAGE: None}
    # no IMAGE, no AUDIO positions: their banks may even be absent
    x = random_inputs(rng, {Kind.TEXT: 5, Kind.VIDEO: 20}, 40, tables)
    x = StitchInputs(x.plan, x.text_table, {Kind.VIDEO: x.banks[Kind.VIDEO]}, tables)
    run_both(lib, x, np.float32)
    # zero-length plan
    x = random_inputs(rng, {}, 40, tables)
    got = NativeStitch(lib)(x, np.float16)
    assert got.shape == (0, 40) and got.dtype == np.float16
    # zero-row media bank with no positions of that kind
    x = random_inputs(rng, {Kind.TEXT: 3}, 40, tables)
    x = StitchInputs(x.plan, x.text_table, {Kind.VIDEO: np.zeros((0, 40), np.float32)}, tables)
    run_both(lib, x, np.float32)


@pytest.mark.parametrize("only", [Kind.AUDIO, Kind.VIDEO], ids=["audio-only", "video-only"])
def test_single_modality_plans(lib, only):
    rng = np.random.default_rng(5)
    tables = {Kind.VIDEO: crte.rotation_table(AXIAL), Kind.AUDIO: crte.rotation_table(MTCT), Kind.IMAGE: None}
    run_both(lib, random_inputs(rng, {only: 120}, 48, tables), np.float32)
    run_both(lib, random_inputs(rng, {Kind.TEXT: 4, only: 120}, 48, tables, np.float16), np.float16)


def test_strided_and_fortran_sources(lib):
    rng = np.random.default_rng(6)
    tables = {Kind.VIDEO: crte.rotation_table(MTCT), Kind.AUDIO: crte.rotation_table(AXIAL), Kind.IMAGE: None}
    x = random_inputs(rng, {Kind.TEXT: 10, Kind.VIDEO: 40, Kind.AUDIO: 40}, 33, tables)
    wide = rng.standard_normal((50, 70)).astype(np.float32)
    banks = {
        Kind.VIDEO: wide[:, 5:38],  # rows 70 elements apart: read in place
        Kind.AUDIO: np.asfortranarray(x.banks[Kind.AUDIO]),  # copied to rows first
    }
    run_both(lib, StitchInputs(x.plan, x.text_table[::-1], banks, tables), np.float32)


def test_float64_inputs_fall_back_to_numpy(lib):
    rng = np.random.default_rng(7)
    tables = {Kind.VIDEO: crte.rotation_table(MTCT), Kind.AUDIO: None, Kind.IMAGE: None}
    x = random_inputs(rng, {Kind.TEXT: 10, Kind.VIDEO: 40}, 32, tables, np.float64)
    np.testing.assert_array_equal(NativeStitch(lib)(x, np.float32), stitch_numpy(x, np.float32))
    x32 = random_inputs(rng, {Kind.TEXT: 10, Kind.VIDEO: 40}, 32, tables)
    np.testing.assert_array_equal(NativeStitch(lib)(x32, np.float64), stitch_numpy(x32, np.float64))


def _tiny_plan(media: list[Item]) -> tuple[Plan, object]:
    cfg = preset_config("tiny")
    items = [TextItem([1, 2]), *media, TextItem([3, 4])]
    return layout(items, cfg, lambda s: [10] if s == "\n" else [11, 12]), cfg


def _preset_inputs(plan: Plan, cfg, rng: np.random.Generator, dtype: type) -> StitchInputs:
    d = cfg.hidden_size
    banks = {k: rng.standard_normal((max(plan.bank_rows.get(k, 0), 1), d)).astype(dtype) for k in (1, 2, 3)}
    tables = {
        Kind.VIDEO: crte.rotation_table(cfg.video_encoder.time) if cfg.video_encoder.time else None,
        Kind.AUDIO: crte.rotation_table(cfg.sound_encoder.time) if cfg.sound_encoder.time else None,
        Kind.IMAGE: None,
    }
    return StitchInputs(plan, rng.standard_normal((1024, d)).astype(dtype), banks, tables)


@pytest.mark.parametrize("case", ["video+audio (TEG)", "audio", "video", "image+audio"])
def test_plans_from_the_tiny_preset(lib, case):
    cfg = preset_config("tiny")
    video = tl.VideoTimeline(tl.sample_frame_indices(100, 4), 10.0, 100, 4)
    audio = tl.audio_timeline(16000 * 10, cfg)
    media = {
        "video+audio (TEG)": [VideoItem(video, audio)],
        "audio": [AudioItem(audio)],
        "video": [VideoItem(video)],
        "image+audio": [ImageItem(7), AudioItem(audio)],
    }[case]
    plan, cfg = _tiny_plan(media)
    assert len(plan) > 10
    rng = np.random.default_rng(8)
    for dtype in (np.float32, np.float16):
        x = _preset_inputs(plan, cfg, rng, dtype)
        run_both(lib, x, dtype)


def test_threads_give_identical_output(lib):
    rng = np.random.default_rng(9)
    tables = {Kind.VIDEO: crte.rotation_table(MTCT), Kind.AUDIO: crte.rotation_table(AXIAL), Kind.IMAGE: None}
    # 3000 x 512 x 4 bytes: enough output for the kernel to use several threads
    x = random_inputs(rng, {Kind.TEXT: 200, Kind.VIDEO: 1800, Kind.AUDIO: 900, Kind.IMAGE: 100}, 512, tables)
    one = run_both(lib, x, np.float32, threads=1)
    for threads in (2, 5, 0):
        np.testing.assert_array_equal(NativeStitch(lib, num_threads=threads)(x, np.float32), one)
    buf = np.full_like(one, np.nan)
    NativeStitch(lib, num_threads=2)(x, np.float32, out=buf)
    np.testing.assert_array_equal(buf, one)


# --------------------------------------------------------------------------------------------------
# errors: raised like numpy's, nothing written


def test_errors_are_python_exceptions(lib):
    rng = np.random.default_rng(10)
    tables = {Kind.VIDEO: crte.rotation_table(MTCT), Kind.AUDIO: None, Kind.IMAGE: None}
    x = random_inputs(rng, {Kind.TEXT: 4, Kind.VIDEO: 6}, 32, tables)
    stitch = NativeStitch(lib)
    buf = np.zeros((10, 32), np.float32)

    bad_src = x.plan.src.copy()
    bad_src[np.flatnonzero(x.plan.kind == Kind.VIDEO)[0]] = 50  # bank has 50 rows
    bad = Plan(x.plan.kind, bad_src, x.plan.scale, x.plan.a, x.plan.b, x.plan.time, [])
    with pytest.raises(IndexError):
        stitch(StitchInputs(bad, x.text_table, x.banks, tables), np.float32, out=buf)
    assert not buf.any()  # validated before anything is written

    with pytest.raises(KeyError):
        stitch(StitchInputs(x.plan, x.text_table, {Kind.AUDIO: x.banks[Kind.AUDIO]}, tables), np.float32)
    odd = {Kind.VIDEO: crte.RotationTable(np.ones(3), np.zeros(0))}
    with pytest.raises(ValueError):
        stitch(StitchInputs(x.plan, x.text_table, x.banks, odd), np.float32)
    bad_kind = x.plan.kind.copy()
    bad_kind[0] = 7
    bad = Plan(bad_kind, x.plan.src, x.plan.scale, x.plan.a, x.plan.b, x.plan.time, [])
    with pytest.raises(ValueError):
        stitch(StitchInputs(bad, x.text_table, x.banks, tables), np.float32)
    with pytest.raises(ValueError):
        stitch(x, np.float32, out=np.zeros((3, 32), np.float32))
    with pytest.raises(ValueError):
        NativeStitch(lib, num_threads=-1)


# --------------------------------------------------------------------------------------------------
# selection and the library-missing fallback


def test_select_prefers_the_cpu_kernel_for_numpy_inputs(lib):
    name, fn, _ = select_stitch()
    assert name == "cpp" and isinstance(fn, NativeStitch)
    assert select_stitch("numpy")[0] == "numpy"
    name, fn, _ = select_stitch("cuda")
    if cuda_unavailable_reason(lib) is None:
        assert name == "cuda" and isinstance(fn, CudaStitch)
    else:
        assert name == "cpp"  # no device here: numpy inputs go to the CPU kernel
    with pytest.raises(ValueError):
        select_stitch("opencl")


def test_missing_library_falls_back_to_numpy(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(native.ENV_LIB, str(tmp_path / "nowhere" / "libvinci_crte.so"))
    with caplog.at_level("DEBUG", logger="vinci_edge.stitch"):
        assert select_stitch()[:2] == ("numpy", stitch_numpy)
        assert select_stitch("cuda")[:2] == ("numpy", stitch_numpy)
        assert select_stitch("cpp")[:2] == ("numpy", stitch_numpy)
    assert "nowhere" in (native.unavailable_reason() or "")
    assert "unavailable" in caplog.text
    # not a shared library at all
    junk = tmp_path / "libvinci_crte.so"
    junk.write_bytes(b"not an ELF file")
    monkeypatch.setenv(native.ENV_LIB, str(junk))
    assert select_stitch()[0] == "numpy"
    assert "cannot load" in (native.unavailable_reason() or "")
    with pytest.raises(native.NativeLibraryError):
        NativeStitch()
    # switched off
    monkeypatch.delenv(native.ENV_LIB)
    monkeypatch.setenv(native.ENV_NO_NATIVE, "1")
    assert select_stitch()[0] == "numpy"


def test_native_lib_env_points_at_another_build(lib, monkeypatch):
    monkeypatch.setenv(native.ENV_LIB, str(lib.path))
    assert select_stitch()[0] == "cpp"


def test_asking_for_cuda_here_falls_back_and_says_why(lib):
    why = cuda_unavailable_reason(lib)
    if why is None:
        pytest.skip("this machine runs the CUDA stitch (tests/gpu checks it)")
    choice = select_stitch("cuda")
    assert choice.name == "cpp" and isinstance(choice.stitch, NativeStitch)
    assert choice.note == f"stitch: asked for cuda, using cpp: {why}"
    assert select_stitch().note is None and select_stitch("cpp").note is None  # got what was asked


def test_without_the_library_every_request_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv(native.ENV_LIB, str(tmp_path / "missing.so"))
    cuda = select_stitch("cuda")
    assert cuda[:2] == ("numpy", stitch_numpy)
    assert cuda.note.startswith("stitch: asked for cuda, using numpy: the native library is unavailable")
    assert "missing.so" in cuda.note
    cpp = select_stitch("cpp")
    assert cpp.name == "numpy" and "missing.so" in cpp.note
    assert select_stitch().note is None  # nothing asked for: numpy is the expected result, only logged


@pytest.mark.parametrize("name", ["opencl", "CUDA", "", "tensorrt"])
def test_unknown_stitch_names_are_refused(name):
    with pytest.raises(ValueError, match="cuda, cpp, numpy"):
        select_stitch(name)


class FakeCudart:
    """cuda-python's runtime API (the calls CudaStitch makes, same tuple results) on host memory."""

    class cudaError_t(enum.IntEnum):  # noqa: N801 - cuda-python's names
        cudaSuccess = 0
        cudaErrorNoDevice = 100

    class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self, devices: int = 1) -> None:
        self.devices = devices
        self.buffers: dict[int, ctypes.Array] = {}
        self.streams = 0
        self.uploaded = 0

    def cudaGetDeviceCount(self):  # noqa: N802
        if self.devices:
            return self.cudaError_t.cudaSuccess, self.devices
        return self.cudaError_t.cudaErrorNoDevice, 0

    def cudaStreamCreate(self):  # noqa: N802
        self.streams += 1
        return self.cudaError_t.cudaSuccess, 0x5EA

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamDestroy(self, stream):  # noqa: N802
        self.streams -= 1
        return (self.cudaError_t.cudaSuccess,)

    def cudaMalloc(self, nbytes):  # noqa: N802
        buf = ctypes.create_string_buffer(nbytes)
        self.buffers[ctypes.addressof(buf)] = buf
        return self.cudaError_t.cudaSuccess, ctypes.addressof(buf)

    def cudaFree(self, ptr):  # noqa: N802
        del self.buffers[ptr]
        return (self.cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):  # noqa: N802
        assert stream == 0x5EA
        ctypes.memmove(dst, src, nbytes)
        self.uploaded += nbytes if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice else 0
        return (self.cudaError_t.cudaSuccess,)


class CpuKernelAsCuda:
    """The library with its CUDA entry point played by the CPU kernel: with FakeCudart's "device"
    buffers in host memory, CudaStitch's whole host side (gather, remap, uploads, plan, download,
    frees) runs here; only the kernel launch itself is left to tests/gpu."""

    has_cuda = True

    def __init__(self, lib: native.NativeLibrary) -> None:
        self.lib = lib
        self.path = lib.path

    def cuda_device_count(self) -> int:
        return 1

    def stitch_cuda(self, sources, plan, dim, out, out_stride, out_dtype, error_flag, stream) -> None:
        assert error_flag and stream == 0x5EA
        self.lib.stitch_cpu(sources, plan, dim, out, out_stride, out_dtype, 1)

    def check(self, rc: int, what: str) -> None:
        self.lib.check(rc, what)


def test_cuda_reason_names_the_missing_piece(lib, monkeypatch):
    from vinci_edge.stitch import cuda_host

    fake = CpuKernelAsCuda(lib)
    monkeypatch.setattr(cuda_host, "import_cudart", lambda: FakeCudart())
    assert cuda_unavailable_reason(fake) is None
    monkeypatch.setattr(cuda_host, "import_cudart", lambda: FakeCudart(devices=0))
    assert "cuda-python sees no CUDA device" in cuda_unavailable_reason(fake)

    def no_cuda_python():
        raise ImportError("No module named 'cuda'")

    monkeypatch.setattr(cuda_host, "import_cudart", no_cuda_python)
    assert "cuda-python is not installed" in cuda_unavailable_reason(fake)
    monkeypatch.setattr(fake, "cuda_device_count", lambda: -1)
    assert cuda_unavailable_reason(fake) == "no CUDA device is visible (no driver)"
    monkeypatch.setattr(fake, "has_cuda", False)
    assert "without its CUDA part" in cuda_unavailable_reason(fake)
    assert "unavailable" in cuda_unavailable_reason(None)


def test_compacted_inputs_give_the_same_stitch():
    rng = np.random.default_rng(14)
    tables = {Kind.VIDEO: crte.rotation_table(MTCT), Kind.AUDIO: crte.rotation_table(AXIAL), Kind.IMAGE: None}
    x = random_inputs(rng, {Kind.TEXT: 30, Kind.VIDEO: 20, Kind.AUDIO: 10}, 40, tables, vocab=5000)
    y = compact_inputs(x)
    text = x.plan.kind == Kind.TEXT
    assert y.text_table.shape == (np.unique(x.plan.src[text]).size, 40)  # the used rows, not 5000
    assert set(y.banks) == {Kind.VIDEO, Kind.AUDIO}  # IMAGE is not used: not uploaded
    np.testing.assert_array_equal(stitch_numpy(y, np.float32), stitch_numpy(x, np.float32))
    # a source whose every row is read passes as it is, src untouched
    small = random_inputs(rng, {Kind.TEXT: 200, Kind.VIDEO: 5}, 40, tables, vocab=7)
    z = compact_inputs(small)
    assert z.text_table is small.text_table
    small_text = small.plan.kind == Kind.TEXT
    np.testing.assert_array_equal(z.plan.src[small_text], small.plan.src[small_text])
    # the mistakes numpy and the CPU kernel refuse, refused on the host before anything is uploaded
    bad_src = x.plan.src.copy()
    bad_src[np.flatnonzero(text)[0]] = 5000
    with pytest.raises(IndexError):
        compact_inputs(replace(x, plan=replace(x.plan, src=bad_src)))
    with pytest.raises(KeyError):
        compact_inputs(replace(x, banks={Kind.VIDEO: x.banks[Kind.VIDEO]}))
    bad_kind = x.plan.kind.copy()
    bad_kind[0] = 7
    with pytest.raises(ValueError):
        compact_inputs(replace(x, plan=replace(x.plan, kind=bad_kind)))


def test_cuda_stitch_host_side_with_the_cpu_kernel_as_device(lib):
    rng = np.random.default_rng(15)
    tables = {Kind.VIDEO: crte.rotation_table(MTCT), Kind.AUDIO: crte.rotation_table(AXIAL), Kind.IMAGE: None}
    cudart = FakeCudart()
    stitch = CudaStitch(CpuKernelAsCuda(lib), cudart=cudart)
    for in_dtype, out_dtype in [(np.float32, np.float32), (np.float16, np.float32), (np.float32, np.float16)]:
        x = random_inputs(
            rng,
            {Kind.TEXT: 40, Kind.VIDEO: 60, Kind.AUDIO: 50, Kind.IMAGE: 7},
            48,
            tables,
            in_dtype,
            vocab=20000,
        )
        assert_matches(stitch(x, out_dtype), stitch_numpy(x, out_dtype))
        assert not cudart.buffers and cudart.streams == 0  # everything freed, the stream destroyed
    assert cudart.uploaded < x.text_table.nbytes  # the used text rows only, not the vocabulary
    empty = random_inputs(rng, {}, 48, tables)
    assert stitch(empty, np.float16).shape == (0, 48)
    x64 = random_inputs(rng, {Kind.TEXT: 5, Kind.VIDEO: 5}, 48, tables, np.float64)
    np.testing.assert_array_equal(stitch(x64, np.float32), stitch_numpy(x64, np.float32))  # numpy's
    # errors: a bad src before any allocation, an odd rotation width after some; both leave nothing behind
    bad_src = x.plan.src.copy()
    bad_src[np.flatnonzero(x.plan.kind == Kind.AUDIO)[0]] = 50  # the bank has 50 rows
    with pytest.raises(IndexError):
        stitch(replace(x, plan=replace(x.plan, src=bad_src)), np.float32)
    with pytest.raises(ValueError, match="odd"):
        stitch(replace(x, tables={Kind.VIDEO: crte.RotationTable(np.ones(3), np.zeros(0))}), np.float32)
    assert not cudart.buffers and cudart.streams == 0


# --------------------------------------------------------------------------------------------------
# CUDA: compiled for every architecture (nothing can run here; tests/gpu runs it where a GPU is)


def fatbin_images(path: Path) -> set[tuple[str, int]]:
    """(kind, sm) of every image in the CUDA fat binaries embedded in an object or shared library
    (what `cuobjdump --list-elf/--list-ptx` lists; cuobjdump is not part of every toolkit install)."""
    data = path.read_bytes()
    magic = struct.pack("<I", 0xBA55ED50)
    images: set[tuple[str, int]] = set()
    i = data.find(magic)
    while i >= 0:
        _, _, header, size = struct.unpack_from("<IHHQ", data, i)
        j, end = i + header, i + header + size
        while header == 16 and j + 32 <= end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, j)
            (arch,) = struct.unpack_from("<I", data, j + 28)
            images.add(({1: "ptx", 2: "sass"}.get(kind, str(kind)), arch))
            if entry_header == 0:
                break
            j += entry_header + payload
        i = data.find(magic, i + 4)
    return images


def expected_images(archs: tuple[int, ...]) -> set[tuple[str, int]]:
    return {("sass", a) for a in archs} | {("ptx", max(archs))}


def find_nvcc() -> str | None:
    for cand in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def test_built_library_carries_every_architecture(lib):
    if not lib.has_cuda:
        pytest.skip(f"{lib.path.name} was built without its CUDA part (no nvcc at install time)")
    archs = tuple(int(a) for a in lib.cuda_archs)
    assert fatbin_images(lib.path) == expected_images(archs)
    if find_nvcc() and set(CUDA_ARCHS) <= set(archs):
        assert archs == CUDA_ARCHS  # the default list, all of which this nvcc supports


def test_cuda_source_compiles_for_every_architecture(tmp_path):
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (CUDACXX, PATH, /usr/local/cuda/bin): the CUDA kernel cannot be compiled")
    supported = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True).stdout.split()
    missing = [a for a in CUDA_ARCHS if f"sm_{a}" not in supported]
    if missing:
        pytest.skip(f"{nvcc} cannot build {missing} (CUDA 13 is needed for sm_110)")
    (tmp_path / "crte_build_info.h").write_text(
        '#define VINCI_CRTE_VERSION "test"\n#define VINCI_CRTE_CUDA_ARCHS "test"\n'
    )
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in CUDA_ARCHS]
    gencode.append(f"-gencode=arch=compute_{CUDA_ARCHS[-1]},code=compute_{CUDA_ARCHS[-1]}")
    obj = tmp_path / "crte_cuda.o"
    cmd = [nvcc, "-c", "-std=c++17", "-O3", "--threads", "0", "-Xcompiler=-fPIC,-Wall,-Wextra"]
    cmd += ["-I", str(ROOT / "cpp_ext"), "-I", str(tmp_path), *gencode]
    proc = subprocess.run(
        [*cmd, str(ROOT / "cpp_ext" / "crte_cuda.cu"), "-o", str(obj)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower(), proc.stderr
    assert fatbin_images(obj) == expected_images(CUDA_ARCHS)


def test_cuda_entry_checks_on_the_host_and_fails_cleanly_without_a_device(lib):
    if not lib.has_cuda:
        with pytest.raises(native.NativeLibraryError):
            stitch_cuda({}, DevicePlan(0, 0, 0, 0, 0, 0), 64, 0, lib=lib)
        return
    fake = DevicePlan(0x2000, 0x3000, 0x4000, 0x5000, 0x6000, 5)  # never dereferenced below
    odd = {Kind.VIDEO: DeviceSource(ptr=0x1000, rows=10, freqs_a=0x100, len_a=3)}
    with pytest.raises(ValueError, match="odd"):
        stitch_cuda(odd, fake, 64, 0x7000, lib=lib)
    with pytest.raises(ValueError):
        stitch_cuda({Kind.TEXT: DeviceSource(ptr=0x1000, rows=10, row_stride=32)}, fake, 64, 0x7000, lib=lib)
    stitch_cuda({}, DevicePlan(0, 0, 0, 0, 0, 0), 64, 0, lib=lib)  # nothing to do: no launch
    if lib.cuda_device_count() <= 0:  # (with a device, fake pointers would fault: tests/gpu runs it)
        with pytest.raises(RuntimeError, match="cuda"):
            stitch_cuda({Kind.TEXT: DeviceSource(ptr=0x1000, rows=10)}, fake, 64, 0x7000, lib=lib)


# --------------------------------------------------------------------------------------------------
# the torch custom op


def test_torch_op_matches_the_reference_rotate(lib):
    torch = pytest.importorskip("torch")
    from vinci_edge.model import crte_op
    from vinci_edge.model.crte_torch import rotate

    assert crte_op.native_available("cpu")
    rng = np.random.default_rng(11)
    for te in (MTCT, AXIAL, AXIAL_LANG):
        table = crte.rotation_table(te)
        x = torch.from_numpy(rng.standard_normal((64, 45)).astype(np.float32))
        scale, a, b = rng.standard_normal(64), rng.uniform(0, 3600, 64), rng.uniform(-1, 1, 64)
        ref = rotate(x.to(torch.float64), table, scale, a, b)
        got = crte_op.rotate(x, table, scale, a, b)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, ref.to(torch.float32), rtol=1e-6, atol=1e-6)
        got16 = crte_op.rotate(x.half(), table, scale, a, b)
        ref16 = rotate(x.half().to(torch.float64), table, scale, a, b)
        assert_matches(got16.numpy(), ref16.numpy().astype(np.float16))


def test_torch_op_stitch_and_fallback(lib, monkeypatch, tmp_path):
    torch = pytest.importorskip("torch")
    from vinci_edge.model import crte_op

    plan, cfg = _tiny_plan([VideoItem(tl.VideoTimeline(tl.sample_frame_indices(100, 4), 10.0, 100, 4))])
    x = _preset_inputs(plan, cfg, np.random.default_rng(12), np.float32)
    ref = stitch_numpy(x, np.float32)
    banks = {k: torch.from_numpy(v) for k, v in x.banks.items()}
    text = torch.from_numpy(x.text_table)
    got = crte_op.stitch(plan, text, banks, x.tables, torch.float32)
    assert_matches(got.numpy(), ref)
    # bfloat16 (the 9B model's dtype) runs the torch float64 path inside the op
    got_bf16 = crte_op.stitch(
        plan, text.bfloat16(), {k: v.bfloat16() for k, v in banks.items()}, x.tables, torch.bfloat16
    )
    assert got_bf16.dtype == torch.bfloat16 and got_bf16.shape == got.shape
    # without the library: the same op, the same numbers, from torch
    monkeypatch.setenv(native.ENV_LIB, str(tmp_path / "missing.so"))
    assert not crte_op.native_available()
    fallback = crte_op.stitch(plan, text, banks, x.tables, torch.float32)
    torch.testing.assert_close(fallback, got, rtol=1e-6, atol=1e-6)


def test_torch_op_is_a_drop_in_for_the_reference_model_stitch(lib):
    torch = pytest.importorskip("torch")
    from vinci_edge.model import crte_op
    from vinci_edge.model.omnivinci import OmniVinciModel

    cfg = preset_config("tiny")
    video = tl.VideoTimeline(tl.sample_frame_indices(100, 4), 10.0, 100, 4)
    plan, _ = _tiny_plan([VideoItem(video, tl.audio_timeline(16000 * 10, cfg))])
    torch.manual_seed(0)
    model = OmniVinciModel(cfg).eval()
    rng = np.random.default_rng(13)
    banks = {
        k: torch.from_numpy(
            rng.standard_normal((max(plan.bank_rows[k], 1), cfg.hidden_size)).astype(np.float32)
        )
        for k in (Kind.VIDEO, Kind.AUDIO, Kind.IMAGE)
    }
    with torch.no_grad():
        ref = model.stitch(plan, banks)
        got = crte_op.stitch(plan, model.llm.get_input_embeddings().weight, banks, model.tables, model.dtype)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
