"""`vinci-edge doctor` on this machine (the real command, in a subprocess) and its exit-status rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vinci_edge
from vinci_edge.doctor import checks as c
from vinci_edge.doctor import tiny_graph
from vinci_edge.doctor.cli import exit_status
from vinci_edge.runtime.backends import probe, unavailable


def _doctor(*args: str) -> subprocess.CompletedProcess:
    root = str(Path(vinci_edge.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "vinci_edge.cli", "doctor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture(scope="module")
def machine():
    p = probe()
    if p.onnxruntime is None:
        pytest.skip("ONNX Runtime is not installed")
    return p


def test_the_report_says_what_is_missing_and_the_cpu_path_passes(machine):
    proc = _doctor()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "[  ok   ] onnxruntime-cpu" in out and "CPU path: works" in out
    if machine.tensorrt is None:
        assert "TensorRT         missing (" in out and "[missing] tensorrt" in out
    if machine.gpu is None:
        assert "gpu              missing (" in out and "GPU backends working: none" in out
    assert "exit status 0" in out and "Traceback" not in proc.stderr


def test_json_has_the_machine_and_every_check(machine):
    proc = _doctor("--json")
    assert proc.returncode == 0
    report = json.loads(proc.stdout)
    checks = {k["name"]: k for k in report["checks"]}
    assert set(checks) == {
        "onnxruntime-cpu",
        "integer-gemm",
        "stitch-cpp",
        "onnxruntime-cuda",
        "tensorrt",
        "stitch-cuda",
    }
    assert checks["onnxruntime-cpu"]["status"] == "ok" and report["exit_status"] == 0
    assert report["machine"]["onnxruntime"] == machine.onnxruntime
    if machine.tensorrt is None:
        assert checks["tensorrt"]["status"] == "missing"
        assert checks["tensorrt"]["detail"] == unavailable("tensorrt", machine)


def test_requiring_a_gpu_backend_this_machine_lacks_exits_1(machine):
    if unavailable("tensorrt", machine) is None:
        pytest.skip("this machine runs TensorRT")
    proc = _doctor("--require", "tensorrt")
    assert proc.returncode == 1 and "exit status 1" in proc.stdout


def _checks(**status: str) -> list[c.Check]:
    names = ["onnxruntime-cpu", "integer-gemm", "stitch-cpp", "onnxruntime-cuda", "tensorrt", "stitch-cuda"]
    return [
        c.Check(n, "cuda" in n or n == "tensorrt", status.get(n.replace("-", "_"), c.MISSING), "")
        for n in names
    ]


def test_the_exit_status_rule():
    assert exit_status(_checks(onnxruntime_cpu=c.OK), []) == 0  # GPU parts missing: still 0
    assert exit_status(_checks(), []) == 1  # no CPU path
    assert exit_status(_checks(onnxruntime_cpu=c.OK, tensorrt=c.FAILED), []) == 1  # wrong answer
    # an inexact integer GEMM: reported; int8-compute engines prefill on their decode graph instead
    assert exit_status(_checks(onnxruntime_cpu=c.OK, integer_gemm=c.FAILED), []) == 0
    assert exit_status(_checks(onnxruntime_cpu=c.OK), ["ort-cuda"]) == 1
    assert exit_status(_checks(onnxruntime_cpu=c.OK, onnxruntime_cuda=c.OK), ["ort-cuda"]) == 0


def test_the_tiny_graph_is_valid_onnx_and_runs(machine):
    import onnxruntime as ort

    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(tiny_graph.graph_bytes())
    onnx.checker.check_model(model)
    assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == ["n", 16]
    x = np.ones((3, tiny_graph.IN), np.float32)
    sess = ort.InferenceSession(tiny_graph.graph_bytes(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(["y"], {"x": x})[0], tiny_graph.reference(x), atol=1e-5)
