"""The real `tritonserver` that PyTriton ships, run by the tests on a model repository on loopback.

PyTriton's wheel holds the server binary, its Python backend and one backend stub per Python
version; it has no onnxruntime backend. The stub links the system's libpython, so the environment
points it at this interpreter's own library first (../shared/notes/toolchain.md: without it the
Python models fail to load with `'_thread.RLock' object has no attribute '_recursion_count'`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytriton_server() -> Path:
    """The folder of PyTriton's tritonserver (bin/, backends/, python_backend_stubs/), or a skip."""
    try:
        import pytriton
    except ImportError:
        pytest.skip("nvidia-pytriton is not installed (it ships the tritonserver binary)")
    root = Path(pytriton.__file__).parent / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        pytest.skip(f"no tritonserver binary in {root}")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_server(workdir: Path) -> Path:
    """A copy of the server with the stub for this Python in its Python backend (what PyTriton does)."""
    root = pytriton_server()
    server = workdir / "tritonserver"
    if not server.exists():
        shutil.copytree(root, server, ignore=shutil.ignore_patterns("python_backend_stubs"))
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        shutil.copy(stub, server / "backends" / "python" / "triton_python_backend_stub")
    return server


def server_env() -> dict[str, str]:
    import pytriton

    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    env = dict(os.environ)
    paths = [sysconfig.get_config_var("LIBDIR"), str(libs), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = ":".join(p for p in paths if p)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


@contextlib.contextmanager
def tritonserver(
    repo: Path, workdir: Path, *args: str, ready_s: float = 180.0
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run tritonserver on `repo`; yields (gRPC address, process) once it is ready (or has exited:
    the caller reads its log). Always stopped (SIGTERM, then SIGKILL) on the way out."""
    server = prepare_server(workdir)
    grpc, http = free_port(), free_port()
    log = (workdir / f"tritonserver-{grpc}.log").open("w")
    cmd = [
        str(server / "bin" / "tritonserver"),
        f"--model-repository={repo}",
        f"--backend-directory={server / 'backends'}",
        f"--cache-directory={server / 'caches'}",
        f"--grpc-port={grpc}",
        f"--http-port={http}",
        "--allow-metrics=false",
        *args,
    ]
    proc = subprocess.Popen(cmd, env=server_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"127.0.0.1:{grpc}"
    try:
        wait_ready(url, proc, ready_s)
        yield url, proc
    finally:
        stop(proc)
        log.close()


def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(Exception):
                if client.is_server_ready(client_timeout=2.0):
                    return
            time.sleep(0.5)
    finally:
        client.close()


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def log_of(workdir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(workdir.glob("tritonserver-*.log")))
