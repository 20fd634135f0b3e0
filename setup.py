"""vinci-edge packaging.

Dependencies are split by role (see README "Install"):
- base: what the torch-free runtime needs (numpy, PyAV, tokenizers, Pillow, Jinja2, safetensors);
- exactly one of [cpu] (onnxruntime) or [gpu] (onnxruntime-gpu + cuda-python): the two ONNX Runtime
  wheels overwrite each other, so neither may be a base dependency;
- [export]: the PyTorch reference model, ONNX export and quantization;
- [dev]: tests and lint.
"""

from setuptools import find_packages, setup

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
    "dev": ["pytest>=8", "ruff>=0.6"],
}

setup(
    name="vinci-edge",
    version="0.1.0",
    description="Edge runtime for OmniVinci omni-modal LLMs (video + audio + text in, text out)",
    python_requires=">=3.10",
    packages=find_packages(include=["vinci_edge", "vinci_edge.*"]),
    install_requires=BASE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["vinci-edge=vinci_edge.cli:main"]},
)
