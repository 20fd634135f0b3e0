"""A newcomer's path through the command line: the README's commands work as written, every option
says what it does and what it defaults to, a long prompt has a way in, the slow commands say what
they are doing, Ctrl-C is a line of its own, and a damaged checkpoint is refused before any work.

The commands run as the installed one does (`python -m vinci_edge.cli` in a subprocess) wherever
what is checked is what a user sees: stdout, stderr, the exit status.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vinci_edge
from vinci_edge.cli import build_parser

ROOT = Path(vinci_edge.__file__).resolve().parents[1]  # the code imported here, not another copy
README = ROOT / "README.md"


def cli(*argv: str | Path, stdin: str | None = None, cwd: Path | None = None, timeout: int = 300):
    """`vinci-edge ARGV` in a subprocess, as the console script runs it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "vinci_edge.cli", *map(str, argv)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    subs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subs.choices)


PROGRESS = "[vinci-edge] "


def _news(stderr: str) -> list[str]:
    """The progress lines on stderr, without the answer's warnings."""
    lines = [line.removeprefix(PROGRESS) for line in stderr.splitlines() if line.startswith(PROGRESS)]
    return [line for line in lines if not line.startswith("warning:")]


# ---- 6. a damaged checkpoint is refused before any work ----------------------------------------------
def test_export_refuses_a_truncated_llm_file_before_any_work(tiny_ckpt, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_ckpt, damaged)
    weights = damaged / "llm" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # an interrupted download

    export = cli("export", "--checkpoint", damaged, "--out", tmp_path / "engine")
    assert export.returncode == 2 and export.stdout == ""
    assert _news(export.stderr) == [], export.stderr  # refused before exporting anything
    error, hint = export.stderr.splitlines()
    assert error.startswith(f"vinci-edge: error: cannot read {weights}: ")
    assert "incomplete metadata, file not fully covered" in error
    assert hint == "vinci-edge: hint: the file is damaged or not safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged"]

    generate = cli("generate", "--checkpoint", damaged, "--prompt", "Hi", "--max-new-tokens", "1")
    assert generate.returncode == 2
    assert [line for line in generate.stderr.splitlines() if not line.startswith("[")] == [error, hint]


def test_export_refuses_a_tower_without_weights_before_any_work(tiny_ckpt, tmp_path):
    from vinci_edge.errors import CheckpointError
    from vinci_edge.export.engine import export_engine

    partial = tmp_path / "partial"
    shutil.copytree(tiny_ckpt, partial)
    (partial / "sound_tower" / "model.safetensors").unlink()
    said = []
    with pytest.raises(CheckpointError, match="sound_tower holds no .safetensors weights"):
        export_engine(partial, tmp_path / "engine", progress=said.append)
    assert said == [] and not (tmp_path / "engine").exists()
