"""The runtime's backends, what each needs, and what this machine has.

    ort-cpu    ONNX Runtime on the CPU (the default; also what `--provider` / `--stage-provider` tune)
    ort-cuda   ONNX Runtime's CUDA provider, inputs and outputs bound on the device (runtime/ort_cuda.py)
    tensorrt   TensorRT plans built by `vinci-edge build-engines`, on one CUDA stream with a
               device-resident KV cache and the CUDA stitch kernel (runtime/tensorrt_backend.py)

`probe()` looks at the machine once (every import lazy, every failure caught and kept as a reason):
the GPU and its compute capability, driver and CUDA runtime, TensorRT, ONNX Runtime and its providers,
cuda-python, the native stitch library and its kernels. `unavailable(backend, probe)` says in one line
why a backend cannot run here, or None; `vinci-edge run --backend` refuses with that line (exit 2)
before anything is loaded, and `vinci-edge doctor` prints the same findings. The decisions are pure
functions of a `Probe`, so the tests feed them machines they do not have.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from typing import Any

from vinci_edge.errors import EngineError
from vinci_edge.runtime.engine_key import DeviceInfo

ORT_CPU = "ort-cpu"
ORT_CUDA = "ort-cuda"
TENSORRT = "tensorrt"
BACKENDS = (ORT_CPU, ORT_CUDA, TENSORRT)

GPU_EXTRA = "pip install 'vinci-edge[gpu]' (onnxruntime-gpu + cuda-python), not together with [cpu]"
TENSORRT_INSTALL = (
    "install TensorRT 10 for this CUDA (pip install tensorrt-cu12 / tensorrt-cu13 on a workstation; "
    "JetPack ships it on Jetson: apt install python3-libnvinfer)"
)

# Precisions by compute capability: FP8 tensor cores arrive with Ada (sm_89); Orin (sm_87, Ampere)
# runs FP16 / INT8 and INT4 weight-only, not FP8.
FP8_MIN_CC = (8, 9)


def precisions(cc: tuple[int, int] | None) -> dict[str, bool]:
    """Which engine precisions a GPU of compute capability `cc` runs (None: no GPU)."""
    if cc is None:
        return {p: False for p in ("fp32", "fp16", "int8", "int4-awq", "fp8")}
    return {
        "fp32": True,
        "fp16": cc >= (5, 3),
        "int8": cc >= (6, 1),
        "int4-awq": cc >= (7, 5),
        "fp8": cc >= FP8_MIN_CC,
    }


@dataclass
class Gpu:
    name: str
    compute_capability: tuple[int, int]
    memory_bytes: int = 0

    @property
    def sm(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"


@dataclass
class Probe:
    """What this machine has for the GPU backends. A None version means absent; `reasons` says why."""

    gpus: list[Gpu] = field(default_factory=list)
    driver: str | None = None  # CUDA driver API version the driver supports, e.g. "12.6"
    cuda_runtime: str | None = None  # the CUDA runtime cuda-python reaches
    cuda_python: str | None = None
    tensorrt: str | None = None
    onnxruntime: str | None = None
    ort_providers: list[str] = field(default_factory=list)
    native_library: str | None = None  # path of libvinci_crte.so
    native_kernels: list[str] = field(default_factory=list)  # "cpu", "cuda"
    native_cuda_archs: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)  # component -> why it is absent

    @property
    def gpu(self) -> Gpu | None:
        return self.gpus[0] if self.gpus else None

    def device_info(self) -> DeviceInfo | None:
        """Device 0 and this TensorRT, as engine keys name them (None without either)."""
        if self.gpu is None or self.tensorrt is None:
            return None
        return DeviceInfo(self.gpu.name, self.gpu.compute_capability, self.tensorrt)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gpus"] = [{**asdict(g), "sm": g.sm} for g in self.gpus]
        d["precisions"] = precisions(self.gpu.compute_capability if self.gpu else None)
        return d


def unavailable(backend: str, p: Probe) -> str | None:
    """Why `backend` cannot run on the machine `p` describes, in one line; None when it can."""
    if backend not in BACKENDS:
        return f"unknown backend {backend!r} (choose {', '.join(BACKENDS)})"
    if backend == ORT_CPU:
        if p.onnxruntime is None:
            return f"ONNX Runtime is not installed ({p.reasons.get('onnxruntime', 'import failed')})"
        return None
    if backend == ORT_CUDA:
        if p.onnxruntime is None:
            return f"ONNX Runtime is not installed: {GPU_EXTRA}"
        if "CUDAExecutionProvider" not in p.ort_providers:
            return (
                f"this ONNX Runtime ({p.onnxruntime}) has no CUDA provider (it has "
                f"{', '.join(p.ort_providers) or 'none'}): {GPU_EXTRA}"
            )
        return _no_gpu(p)
    if p.tensorrt is None:
        return f"TensorRT is not installed ({p.reasons.get('tensorrt', 'import failed')}): {TENSORRT_INSTALL}"
    if p.cuda_python is None:
        return f"cuda-python is not installed: {GPU_EXTRA}"
    return _no_gpu(p)


def _no_gpu(p: Probe) -> str | None:
    if p.gpu is None:
        return f"no CUDA GPU is visible ({p.reasons.get('gpu', 'no device')})"
    return None


# --------------------------------------------------------------------------------------------------
# Looking at the machine


def probe() -> Probe:
    """This machine, every component looked at without raising."""
    p = Probe()
    _probe_onnxruntime(p)
    _probe_tensorrt(p)
    _probe_cuda(p)
    _probe_native(p)
    return p


def _version(module: str) -> tuple[Any | None, str | None]:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # ImportError, or a library that fails to load its .so
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip(": ")
    return mod, None


def _probe_onnxruntime(p: Probe) -> None:
    ort, why = _version("onnxruntime")
    if ort is None:
        p.reasons["onnxruntime"] = why or "not installed"
        return
    p.onnxruntime = getattr(ort, "__version__", "?")
    try:
        p.ort_providers = list(ort.get_available_providers())
    except Exception as exc:
        p.reasons["ort_providers"] = str(exc)


def _probe_tensorrt(p: Probe) -> None:
    trt, why = _version("tensorrt")
    if trt is None:
        p.reasons["tensorrt"] = why or "not installed"
    else:
        p.tensorrt = getattr(trt, "__version__", "?")


def _probe_cuda(p: Probe) -> None:
    try:
        from vinci_edge.runtime.device import import_cuda_runtime

        rt = import_cuda_runtime()
    except ImportError as exc:
        p.reasons["cuda_python"] = str(exc)
        p.reasons["gpu"] = "cuda-python is not installed"
        return
    try:
        from importlib.metadata import version

        p.cuda_python = version("cuda-python")
    except Exception:
        p.cuda_python = "?"
    ok = rt.cudaError_t.cudaSuccess
    try:
        err, v = rt.cudaRuntimeGetVersion()
        if err == ok:
            p.cuda_runtime = _cuda_version(v)
        err, v = rt.cudaDriverGetVersion()
        if err == ok and v:
            p.driver = _cuda_version(v)
        err, n = rt.cudaGetDeviceCount()
    except Exception as exc:  # cuda-python 13 raises when libcuda.so cannot be loaded
        p.reasons["gpu"] = f"no CUDA driver ({type(exc).__name__}: {str(exc)[:160]})"
        return
    if err != ok or n == 0:
        p.reasons["gpu"] = f"no CUDA device ({getattr(err, 'name', err)})"
        return
    for i in range(n):
        err, prop = rt.cudaGetDeviceProperties(i)
        if err == ok:
            name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
            p.gpus.append(Gpu(name.strip("\0 "), (prop.major, prop.minor), int(prop.totalGlobalMem)))


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def _probe_native(p: Probe) -> None:
    from vinci_edge.stitch import library as native

    lib = native.load_library()
    if lib is None:
        p.reasons["native_library"] = native.unavailable_reason()
        return
    p.native_library = str(lib.path)
    p.native_kernels = ["cpu"] + (["cuda"] if lib.has_cuda else [])
    p.native_cuda_archs = ";".join(lib.cuda_archs) if lib.has_cuda else None


# --------------------------------------------------------------------------------------------------
# Choosing one


def require_backend(backend: str, p: Probe | None = None) -> Probe:
    """The probe of this machine, or one EngineError (exit 2 at the CLI) saying why `backend`
    cannot run here. ort-cpu is not probed: ONNX Runtime reports itself when a session is made."""
    if backend == ORT_CPU:
        return p or Probe()
    p = p or probe()
    why = unavailable(backend, p)
    if why is not None:
        hint = "use --backend ort-cpu (the default), or run `vinci-edge doctor` to see what is missing"
        raise EngineError(f"--backend {backend} cannot run here: {why}", hint=hint)
    return p


def make_stages(
    backend: str,
    engine: Any,
    text_table: Any,
    provider: str = "cpu",
    stage_providers: dict[str, str] | None = None,
    threads: int = 0,
    context: int | None = None,
    load_metrics: Any = None,
    plans: Any = None,
    p: Probe | None = None,
    decoder: str = "fused",
) -> Any:
    """The `Stages` of `backend` for an engine (the backend checked first, `require_backend`).
    `decoder` picks ort-cpu's decoder graph; TensorRT always runs the portable one."""
    if backend != ORT_CPU and (provider != "cpu" or stage_providers):
        raise EngineError(
            f"--backend {backend} chooses where every stage runs; --provider / --stage-provider tune "
            "only the ort-cpu backend's ONNX Runtime providers",
            hint="drop --provider / --stage-provider, or drop --backend",
        )
    if backend != ORT_CPU and decoder != "fused":
        raise EngineError(
            f"--decoder {decoder} chooses the ort-cpu backend's decoder graph; {backend} picks its own",
            hint="drop --decoder, or use --backend ort-cpu",
        )
    p = require_backend(backend, p)
    if backend == ORT_CPU:
        from vinci_edge.runtime.stages import EngineStages

        return EngineStages(
            engine, text_table, provider, stage_providers, threads, context, load_metrics, decoder
        )
    if backend == ORT_CUDA:
        from vinci_edge.runtime.ort_cuda import OrtCudaStages

        return OrtCudaStages(engine, text_table, threads, context, load_metrics)
    from vinci_edge.runtime.tensorrt_backend import TrtStages

    device = p.device_info()
    assert device is not None  # require_backend checked the GPU and TensorRT
    return TrtStages(engine, text_table, device, plans, context)
