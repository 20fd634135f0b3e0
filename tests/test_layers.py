"""The layers only point down: `lint-imports` (import-linter, contracts in pyproject.toml) passes on
the package as it is and fails on a copy with one upward import added."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the vinci_edge package found under `tree`, with the project's contracts."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "vinci_edge", tmp_path / "vinci_edge", ignore=shutil.ignore_patterns("_native"))
    return tmp_path


def test_the_contracts_hold(copy):
    out = lint_imports(copy)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "layers point down KEPT" in out.stdout and "the runtime path is torch-free KEPT" in out.stdout


def test_an_upward_import_breaks_the_layers(copy):
    with (copy / "vinci_edge" / "plan.py").open("a") as f:
        f.write("\nfrom vinci_edge.runtime import pipeline  # noqa: E402 - upward, on purpose\n")
    out = lint_imports(copy)
    assert out.returncode != 0
    assert "layers point down BROKEN" in out.stdout
    assert "vinci_edge.plan -> vinci_edge.runtime.pipeline" in out.stdout


def test_torch_in_the_runtime_breaks_the_torch_free_contract(copy):
    with (copy / "vinci_edge" / "stitch" / "numpy_stitch.py").open("a") as f:
        f.write("\nimport torch  # noqa: E402 - on purpose\n")
    out = lint_imports(copy)
    assert out.returncode != 0
    assert "the runtime path is torch-free BROKEN" in out.stdout
    assert "layers point down KEPT" in out.stdout
