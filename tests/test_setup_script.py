"""scripts/setup.sh, one step at a time: the test sources the script (which then runs nothing) and
calls one of its functions in a real bash.

Installing for real needs the network and minutes, so `pip` and `apt-get` are small scripts in a
temporary folder that only write down how they were called; everything else is real: the probe of
the PyTorch index goes over HTTP to a server started here (or to a closed port), `dpkg -s` asks the
real package database, and `.venv/bin/python` is a real virtual environment made for the test.
"""

from __future__ import annotations

import functools
import http.server
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"


def _recorder(folder: Path, name: str) -> Path:
    """An executable `name` in `folder` that appends its arguments, one call a line, to NAME.log."""
    folder.mkdir(exist_ok=True)
    log = folder / f"{name}.log"
    tool = folder / name
    tool.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    tool.chmod(0o755)
    return tool


def _calls(tool: Path) -> list[str]:
    log = tool.with_name(f"{tool.name}.log")
    return log.read_text().splitlines() if log.exists() else []


def setup_step(
    step: str, tmp_path: Path, before: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Source setup.sh in bash in `tmp_path`, run `before` (variable overrides), then `step`.
    PYTHON=false: were the script to run its main steps when sourced, it would stop at once."""
    script = f"source {SETUP}\n{before}\n{step}\n"
    full_env = {**os.environ, "PYTHON": "false", **(env or {})}
    return subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=120
    )


# ---- Debian sample media: each missing package, not all or nothing ------------------------------------
needs_dpkg = pytest.mark.skipif(shutil.which("dpkg") is None, reason="not a Debian system (no dpkg)")


def _as_root(tmp_path: Path, uid: int = 0) -> dict[str, str]:
    """PATH with the recording apt-get and an `id` that answers `uid`, so the root-only branch runs
    whoever runs the tests."""
    bin_dir = tmp_path / "bin"
    _recorder(bin_dir, "apt-get")
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (bin_dir / "id").chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


@needs_dpkg
def test_setup_installs_each_missing_debian_package(tmp_path):
    """dpkg itself is installed wherever dpkg is; the other package does not exist."""
    env = _as_root(tmp_path)
    proc = setup_step("install_debian_media", tmp_path, "DEBIAN_MEDIA=(dpkg vinci-edge-no-such-package)", env)
    assert proc.returncode == 0, proc.stderr
    assert _calls(tmp_path / "bin" / "apt-get") == ["install -y -q vinci-edge-no-such-package"]
    assert "[setup] installing Debian packages for the tests: vinci-edge-no-such-package" in proc.stdout


@needs_dpkg
def test_setup_installs_nothing_when_every_package_is_there(tmp_path):
    proc = setup_step("install_debian_media", tmp_path, "DEBIAN_MEDIA=(dpkg)", _as_root(tmp_path))
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    assert _calls(tmp_path / "bin" / "apt-get") == []


@needs_dpkg
def test_setup_without_root_prints_the_install_line(tmp_path):
    env = _as_root(tmp_path, uid=1000)
    proc = setup_step("install_debian_media", tmp_path, "DEBIAN_MEDIA=(dpkg no-such-a no-such-b)", env)
    assert proc.returncode == 0, proc.stderr
    assert _calls(tmp_path / "bin" / "apt-get") == []
    assert "sudo apt-get install no-such-a no-such-b" in proc.stdout


def test_setup_media_list_is_the_one_the_tests_use():
    proc = subprocess.run(
        ["bash", "-c", f'source {SETUP}; echo "${{DEBIAN_MEDIA[@]}}"'], capture_output=True, text=True
    )
    assert proc.stdout.split() == [
        "forensics-samples-files",
        "opencv-doc",
        "alsa-utils",
        "ffmpeg",
        "libportaudio2",
        "chromium",
        "chromium-driver",
        "espeak-ng",
    ]


# ---- torch: the CPU build from PyTorch's index, or a clean fallback -------------------------------------
linux_x86_64 = pytest.mark.skipif(
    (platform.system(), platform.machine()) != ("Linux", "x86_64"),
    reason="the CPU index is used on Linux x86_64 only (elsewhere PyPI's torch is CPU-only)",
)


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory) -> Path:
    """A real virtual environment without torch (nor pip: the recording pip stands in for it)."""
    folder = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    return folder / "bin" / "python"


@pytest.fixture
def torch_index(tmp_path):
    """A package index served over HTTP here, holding a page for torch."""
    root = tmp_path / "served"
    (root / "whl" / "cpu" / "torch").mkdir(parents=True)
    (root / "whl" / "cpu" / "torch" / "index.html").write_text("<html></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _install_torch(tmp_path: Path, venv_python: Path, index: str) -> tuple[subprocess.CompletedProcess, Path]:
    pip = _recorder(tmp_path / "bin", "pip")
    before = f"VENV_PY={venv_python}; PIP=({pip})"
    return setup_step("install_torch", tmp_path, before, {"TORCH_CPU_INDEX": index}), pip


@linux_x86_64
def test_setup_takes_torch_from_the_cpu_index(tmp_path, bare_venv, torch_index):
    proc, pip = _install_torch(tmp_path, bare_venv, torch_index)
    assert proc.returncode == 0, proc.stderr
    assert _calls(pip) == [f"--index-url {torch_index} torch==2.13.0"]
    assert f"(CPU build) from {torch_index}" in proc.stdout


@linux_x86_64
def test_setup_falls_back_to_the_configured_indexes_saying_so(tmp_path, bare_venv):
    index = f"http://127.0.0.1:{_closed_port()}/whl/cpu"
    proc, pip = _install_torch(tmp_path, bare_venv, index)
    assert proc.returncode == 0, proc.stderr
    assert _calls(pip) == ["torch==2.13.0"]  # pip's own configuration: a local mirror, or PyPI
    first = proc.stdout.splitlines()[0]
    assert first.startswith(f"[setup] PyTorch's CPU index {index} cannot be reached (URLError: ")
    assert "installing torch==2.13.0 from pip's configured indexes instead" in first


def test_setup_uses_the_configured_indexes_when_asked(tmp_path, bare_venv):
    proc, pip = _install_torch(tmp_path, bare_venv, "")
    assert proc.returncode == 0, proc.stderr
    assert _calls(pip) == ["torch==2.13.0"]
    assert "from pip's configured indexes" in proc.stdout


def test_setup_leaves_an_installed_torch_alone(tmp_path):
    """Here (the test's own interpreter) torch 2.13.0 is installed: no pip, no probe."""
    pytest.importorskip("torch")
    import torch

    if torch.__version__.split("+")[0] != "2.13.0":
        pytest.skip(f"torch {torch.__version__} is installed here, not 2.13.0")
    proc, pip = _install_torch(tmp_path, Path(sys.executable), f"http://127.0.0.1:{_closed_port()}/x")
    assert proc.returncode == 0, proc.stderr
    assert _calls(pip) == []
    assert proc.stdout.splitlines()[0] == f"[setup] torch {torch.__version__} is installed"
