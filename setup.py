"""vinci-edge packaging.

Dependencies are split by role (see README "Install"):
- base: what the torch-free runtime needs (numpy, PyAV, tokenizers, Pillow, Jinja2, safetensors);
- exactly one of [cpu] (onnxruntime) or [gpu] (onnxruntime-gpu + cuda-python): the two ONNX Runtime
  wheels overwrite each other, so neither may be a base dependency;
- [export]: the PyTorch reference model, ONNX export and quantization;
- [dev]: tests and lint.
"""

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from setuptools import Distribution, find_packages, setup
from setuptools.command.build_ext import build_ext

BASE = [
    "numpy>=1.26",
    "av>=12",
    "tokenizers>=0.19",
    "pillow>=10",
    "jinja2>=3.1",
    "safetensors>=0.4",
]

EXTRAS = {
    "cpu": ["onnxruntime>=1.20"],
    "gpu": ["onnxruntime-gpu>=1.20", "cuda-python>=12"],
    "export": [
        # torch is not pinned: Jetson and workstation users bring their own build. The README and CI
        # install torch==2.13.0 (CPU) first, which satisfies this range without a CUDA download.
        "torch>=2.4",
        "transformers>=4.57,<4.58",
        "accelerate>=1.0",
        "gguf>=0.10",
        "onnx>=1.17",
        "onnxscript>=0.5",
    ],
    # NVIDIA ModelOpt's ONNX quantizer (the TensorRT precisions int8 / fp8 / int4-awq). Its own `[onnx]`
    # extra pulls onnxruntime-gpu and cupy, which would overwrite the CPU onnxruntime: the pieces its
    # ONNX path imports are listed here instead. The CPU precisions (int8-dynamic, int4) need none of it.
    "quant": [
        "nvidia-modelopt>=0.47,<0.48",
        "requests",
        "onnx-graphsurgeon>=0.6.1",
        "polygraphy>=0.53.4",
        "onnxslim>=0.1.76",
        "onnxconverter-common>=1.16,<1.17",
        "ml_dtypes",
        "lief",
        "cppimport",
    ],
    # The peers of benchmarks/bench_peers.py (not needed by vinci-edge itself).
    "bench": ["optimum>=2.1,<2.2", "optimum-onnx>=0.1,<0.2", "xllamacpp"],
    # The live path's microphone (PortAudio through sounddevice; Debian: libportaudio2). Cameras need
    # nothing more: V4L2 is read through PyAV; `gst:` pipelines need an OpenCV built with GStreamer
    # (JetPack's or Debian's python3-opencv, not pip's wheel). Voice activity detection uses the ONNX
    # model inside `silero-vad`, installed with --no-deps (its dependencies, torch and torchaudio, are
    # for its own wrapper, which is not used).
    "live": ["sounddevice>=0.5"],
    # `vinci-edge serve`: NVIDIA Triton through PyTriton (its wheel ships tritonserver) and the client.
    # PyTriton's Python-backend stub corrupts BYTES tensors under numpy 2: numpy stays below 2.
    "serve": ["nvidia-pytriton>=0.7,<0.8", "tritonclient[grpc,http]>=2.50", "numpy<2"],
    "dev": ["pytest>=8", "ruff>=0.6", "import-linter>=2.1", "selenium>=4.20"],
}

# --------------------------------------------------------------------------------------------------
# The native stitch library (cpp_ext/, docs/cpp_ext.md): built with CMake when cmake and a C++ compiler
# are present, with its CUDA part when nvcc is found, into vinci_edge/_native/. It is optional: every
# failure is a warning and the runtime falls back to numpy. `pip install -v` shows the build log.
#   VINCI_EDGE_NO_NATIVE=1        skip the build
#   VINCI_EDGE_NO_CUDA=1          CPU kernel only
#   VINCI_EDGE_CUDA_ARCHS="87;110"  CMAKE_CUDA_ARCHITECTURES (default: 87 89 90 100 110, as nvcc allows)
#   VINCI_EDGE_CMAKE_ARGS="..."   extra cmake arguments (a toolchain file for a cross build, ...)

ROOT = Path(__file__).resolve().parent
NATIVE_LIB = "libvinci_crte.so"
NATIVE_STATUS = "BUILD_FAILED.txt"  # why there is no library; the loader reports it


def _native_log(msg: str) -> None:
    print(f"[vinci-edge native] {msg}", file=sys.stderr, flush=True)


def _find_nvcc() -> str | None:
    candidates = [os.environ.get("CUDACXX"), shutil.which("nvcc")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(str(Path(os.environ[var]) / "bin" / "nvcc"))
    candidates.append("/usr/local/cuda/bin/nvcc")
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def _run(cmd: list[str], log: list[str]) -> None:
    log.append("$ " + shlex.join(cmd))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
    log.append(proc.stdout)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} exited with status {proc.returncode}")


class BinaryDistribution(Distribution):
    """The wheel carries a compiled library, so it is platform-specific (and build_ext always runs)."""

    def has_ext_modules(self) -> bool:
        return True


CMDCLASS: dict[str, type] = {}
try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    try:
        from wheel.bdist_wheel import bdist_wheel
    except ImportError:
        bdist_wheel = None

if bdist_wheel is not None:

    class PlatformWheel(bdist_wheel):
        """py3-none-<platform>: the library is loaded with ctypes, not as a Python extension, so one
        wheel serves every Python version of a platform."""

        def get_tag(self) -> tuple[str, str, str]:
            return ("py3", "none", super().get_tag()[2])

    CMDCLASS["bdist_wheel"] = PlatformWheel


class BuildNative(build_ext):
    """Build libvinci_crte.so with CMake into vinci_edge/_native/ (the source tree for editable
    installs, the build directory otherwise). Never fails the install."""

    def run(self) -> None:
        self._outputs: list[str] = []
        try:
            self._build()
        except Exception as e:  # a missing library is a fallback, never an install error
            _native_log(
                f"warning: no native stitch library ({type(e).__name__}: {e}); the runtime will use numpy"
            )

    def _build(self) -> None:
        dest = (ROOT if self.inplace else Path(self.build_lib)) / "vinci_edge" / "_native"
        dest.mkdir(parents=True, exist_ok=True)
        (dest / NATIVE_LIB).unlink(missing_ok=True)  # never ship a stale build
        (dest / NATIVE_STATUS).unlink(missing_ok=True)
        if os.environ.get("VINCI_EDGE_NO_NATIVE", "") not in ("", "0"):
            return self._skip(dest, "VINCI_EDGE_NO_NATIVE is set")
        cmake = shutil.which("cmake")
        if cmake is None:
            return self._skip(dest, "cmake is not installed")
        nvcc = None if os.environ.get("VINCI_EDGE_NO_CUDA", "") not in ("", "0") else _find_nvcc()
        # Editable installs rebuild incrementally in build/; others in this build's temp dir.
        base = ROOT / "build" / "native-editable" if self.inplace else Path(self.build_temp) / "vinci_crte"
        attempts = [("cuda", nvcc)] if nvcc else []
        attempts.append(("cpu", None))
        errors = []
        for label, compiler in attempts:
            log: list[str] = []
            start = time.monotonic()
            try:
                lib = self._cmake(cmake, base / label, compiler, log)
                # copy, then rename: a process that has the old library mapped keeps its inode
                tmp = dest / (NATIVE_LIB + ".tmp")
                shutil.copy2(lib, tmp)
                os.replace(tmp, dest / NATIVE_LIB)
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                tail = "\n".join("\n".join(log).splitlines()[-25:])
                _native_log(f"warning: the {label} build failed ({e}); last lines:\n{tail}")
                errors.append(f"{label} build: {e}")
                shutil.rmtree(base / label, ignore_errors=True)  # a broken cache must not stick
                continue
            self._outputs.append(str(dest / NATIVE_LIB))
            what = "CPU + CUDA" if compiler else "CPU only"
            _native_log(f"built {NATIVE_LIB} ({what}) in {time.monotonic() - start:.1f} s -> {dest}")
            return None
        return self._skip(dest, "; ".join(errors))

    def _cmake(self, cmake: str, build_dir: Path, nvcc: str | None, log: list[str]) -> Path:
        args = [cmake, "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release"]
        if nvcc:
            args += ["-DVINCI_CRTE_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={nvcc}"]
            if os.environ.get("VINCI_EDGE_CUDA_ARCHS"):
                args.append(f"-DCMAKE_CUDA_ARCHITECTURES={os.environ['VINCI_EDGE_CUDA_ARCHS']}")
        else:
            args.append("-DVINCI_CRTE_CUDA=OFF")
        args += shlex.split(os.environ.get("VINCI_EDGE_CMAKE_ARGS", ""))
        _run(args, log)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 2)
        _run([cmake, "--build", str(build_dir), "--config", "Release", "--parallel", jobs], log)
        lib = build_dir / "lib" / NATIVE_LIB
        if not lib.is_file():
            raise RuntimeError(f"the build did not produce {lib}")
        return lib

    def _skip(self, dest: Path, why: str) -> None:
        _native_log(f"warning: no native stitch library ({why}); the runtime will use numpy")
        (dest / NATIVE_STATUS).write_text(why + "\n")
        self._outputs.append(str(dest / NATIVE_STATUS))

    def get_outputs(self) -> list[str]:
        return list(getattr(self, "_outputs", []))

    def get_output_mapping(self) -> dict[str, str]:
        return {}


setup(
    name="vinci-edge",
    version="0.1.0",
    description="Edge runtime for OmniVinci omni-modal LLMs (video + audio + text in, text out)",
    python_requires=">=3.10",
    packages=find_packages(include=["vinci_edge", "vinci_edge.*"]),
    package_data={"vinci_edge.live.web": ["static/*"], "vinci_edge.serve": ["repository_models/*.py"]},
    install_requires=BASE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["vinci-edge=vinci_edge.cli:main"]},
    distclass=BinaryDistribution,
    cmdclass={"build_ext": BuildNative, **CMDCLASS},
)
