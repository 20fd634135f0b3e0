"""What `vinci-edge doctor` checks: the tiny graph (tiny_graph.py) on each backend against numpy, and
the stitch kernels against the numpy stitch. Each check is `ok`, `missing` (the component is not here:
what to install) or `failed` (it is here and gave a wrong answer or an error: what to fix).

CPU checks: ONNX Runtime on the CPU, the C++ stitch kernel. GPU checks: ONNX Runtime's CUDA provider
with I/O binding, TensorRT (build the tiny plan, run it through cuda-python buffers), the CUDA stitch
kernel. A check imports what it needs when it runs, and never raises.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vinci_edge.doctor import tiny_graph
from vinci_edge.runtime.backends import ORT_CUDA, TENSORRT, Probe, unavailable

OK, MISSING, FAILED = "ok", "missing", "failed"
ROWS = 5  # the tiny graph's batch in every check


@dataclass
class Check:
    name: str
    gpu: bool
    status: str
    detail: str
    fix: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _x() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((ROWS, tiny_graph.IN)).astype(np.float32)


def _compare(name: str, gpu: bool, got: np.ndarray, want: np.ndarray, atol: float, fix: str) -> Check:
    err = float(np.abs(got.astype(np.float64) - want).max()) if got.shape == want.shape else float("inf")
    if err <= atol:
        return Check(name, gpu, OK, f"matches the CPU reference (max |diff| {err:.1e})")
    shape = "" if got.shape == want.shape else f" (shape {got.shape}, want {want.shape})"
    return Check(
        name, gpu, FAILED, f"differs from the CPU reference: max |diff| {err:.3g} > {atol:g}{shape}", fix
    )


def _guard(name: str, gpu: bool, fix: str, fn: Callable[[], Check]) -> Check:
    start = time.monotonic()
    try:
        check = fn()
    except Exception as exc:  # a doctor reports, it does not crash
        check = Check(
            name,
            gpu,
            FAILED,
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
            fix,
        )
    check.seconds = round(time.monotonic() - start, 3)
    return check


# ---- CPU ------------------------------------------------------------------------------------------
def ort_cpu(p: Probe, atol: float) -> Check:
    name, fix = "onnxruntime-cpu", "pip install 'vinci-edge[cpu]' (or [gpu], never both)"
    if p.onnxruntime is None:
        return Check(
            name, False, MISSING, f"ONNX Runtime is not installed ({p.reasons.get('onnxruntime')})", fix
        )

    def run() -> Check:
        import onnxruntime as ort

        sess = ort.InferenceSession(tiny_graph.graph_bytes(), providers=["CPUExecutionProvider"])
        x = _x()
        return _compare(name, False, sess.run(["y"], {"x": x})[0], tiny_graph.reference(x), atol, fix)

    return _guard(name, False, fix, run)


def integer_gemm(p: Probe) -> Check:
    """ONNX Runtime's integer GEMM in int8-compute's prefill layout (MatMulIntegerToFloat) against
    numpy, at its two activation ranges (runtime/integer_gemm.py): where it is not exact,
    int8-compute engines prefill on their decode graph. Inexact at the full range only is what a
    saturating kernel gives (CPUs without VNNI): not a failure, but such a CPU wants engines
    quantized at --int8-range reduced."""
    name = "integer-gemm"
    fix = "int8-compute engines prefill on their decode graph here; another onnxruntime version may be exact"
    if p.onnxruntime is None:
        return Check(name, False, MISSING, "ONNX Runtime is not installed", "pip install 'vinci-edge[cpu]'")

    def run() -> Check:
        from vinci_edge.runtime.integer_gemm import FULL_LEVELS, check_integer_gemm

        reduced, full = check_integer_gemm(63), check_integer_gemm(FULL_LEVELS)
        if not reduced.exact:
            return Check(name, False, FAILED, f"{reduced.wrong} of {reduced.total} results wrong", fix)
        if not full.exact:
            detail = (
                f"exact at --int8-range reduced; at full {full.wrong} of {full.total} wrong (use reduced)"
            )
            return Check(name, False, OK, detail)
        return Check(name, False, OK, f"exact at both --int8-range values ({full.total} int32 results each)")

    return _guard(name, False, fix, run)


def _stitch_inputs():
    from vinci_edge.crte import RotationTable
    from vinci_edge.kinds import Kind
    from vinci_edge.stitch.inputs import StitchInputs, StitchPlan

    rng = np.random.default_rng(2)
    dim, n = 16, 12
    text = rng.standard_normal((20, dim)).astype(np.float32)
    video = rng.standard_normal((6, dim)).astype(np.float32)
    kind = np.array([0] * 6 + [1] * 6, np.int8)
    src = np.concatenate([rng.integers(0, 20, 6), np.arange(6)]).astype(np.int64)
    scale, a, b = np.ones(n), np.linspace(0, 3, n), np.zeros(n)
    table = RotationTable(freqs_a=1.0 / (10000 ** (np.arange(4) / 4)), freqs_b=np.zeros(0))
    plan = StitchPlan(kind, src, scale, a, b)
    return StitchInputs(plan, text, {Kind.VIDEO: video}, {Kind.VIDEO: table})


def stitch(p: Probe, prefer: str, atol: float) -> Check:
    gpu = prefer == "cuda"
    name = f"stitch-{prefer}"
    fix = "reinstall vinci-edge where a C++ compiler (and nvcc for CUDA) is found: pip install -v ."
    if p.native_library is None:
        return Check(
            name, gpu, MISSING, f"the native library is absent ({p.reasons.get('native_library')})", fix
        )
    if gpu and "cuda" not in p.native_kernels:
        return Check(name, gpu, MISSING, "libvinci_crte.so was built without its CUDA kernel", fix)
    if gpu and p.gpu is None:
        return Check(name, gpu, MISSING, f"no CUDA GPU ({p.reasons.get('gpu')})", "see the gpu line above")

    def run() -> Check:
        from vinci_edge.stitch.numpy_stitch import stitch_numpy
        from vinci_edge.stitch.select import select_stitch

        choice = select_stitch(prefer)
        if choice.name != prefer:
            return Check(name, gpu, MISSING, choice.note or f"{prefer} is not available", fix)
        x = _stitch_inputs()
        return _compare(name, gpu, choice.stitch(x, np.float32), stitch_numpy(x, np.float32), atol, fix)

    return _guard(name, gpu, fix, run)


# ---- GPU ------------------------------------------------------------------------------------------
def ort_cuda(p: Probe, atol: float) -> Check:
    name = "onnxruntime-cuda"
    why = unavailable(ORT_CUDA, p)
    fix = "pip install 'vinci-edge[gpu]' on a machine with an NVIDIA driver"
    if why is not None:
        return Check(name, True, MISSING, why, fix)

    def run() -> Check:
        import onnxruntime as ort

        sess = ort.InferenceSession(
            tiny_graph.graph_bytes(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
        )
        if sess.get_providers()[0] != "CUDAExecutionProvider":
            return Check(
                name, True, FAILED, "the CUDA provider did not load (ONNX Runtime fell back to the CPU)", fix
            )
        x = _x()
        io = sess.io_binding()
        io.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        io.bind_output("y", "cuda", 0)
        sess.run_with_iobinding(io)
        return _compare(name, True, io.copy_outputs_to_cpu()[0], tiny_graph.reference(x), atol, fix)

    return _guard(name, True, fix, run)


def tensorrt(p: Probe, atol: float) -> Check:
    name = "tensorrt"
    why = unavailable(TENSORRT, p)
    fix = "install TensorRT 10 and cuda-python for this CUDA (see docs/gpu.md)"
    if why is not None:
        return Check(name, True, MISSING, why, fix)

    def run() -> Check:
        y, x = build_and_run_tiny_plan()
        return _compare(name, True, y, tiny_graph.reference(x), atol, fix)

    return _guard(name, True, fix, run)


def build_and_run_tiny_plan() -> tuple[np.ndarray, np.ndarray]:
    """Build the tiny graph into a TensorRT plan (strongly typed, a profile for n), run it on
    device buffers, return (y, x)."""
    from vinci_edge.runtime.device import Cuda, Stream
    from vinci_edge.runtime.tensorrt_backend import TrtLogger, TrtStage, import_tensorrt

    trt = import_tensorrt()
    logger = TrtLogger.get(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(tiny_graph.graph_bytes()):
        raise RuntimeError(f"TensorRT cannot parse the tiny graph: {parser.get_error(0)}")
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, tiny_graph.IN), (ROWS, tiny_graph.IN), (8, tiny_graph.IN))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the tiny graph")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.plan"
        path.write_bytes(bytes(serialized))
        cuda = Cuda()
        stream = Stream(cuda)
        stage = TrtStage("tiny", path, cuda, stream, trt=trt)
        x = _x()
        y = stage.run({"x": x})["y"]
        stream.destroy()
    return y, x
