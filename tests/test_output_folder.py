"""The output-folder rule (vinci_edge/output_folder.py), one test per rule: every command that writes a
folder refuses, before any work, an --out whose writing could lose something or cannot succeed, and a
run that fails, is interrupted or is killed leaves nothing that is not the user's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import vinci_edge
from vinci_edge.cli import run
from vinci_edge.errors import CheckpointError, EngineError
from vinci_edge.output_folder import (
    ENGINE,
    ENGINE_FORMAT,
    OutputFolderError,
    is_checkpoint_folder,
    is_engine_folder,
    output_folder,
    partial_folder,
)

REPO = Path(vinci_edge.__file__).resolve().parents[1]


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: what must survive a refusal unchanged."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    (path / "data").mkdir()
    (path / "data" / "results.csv").write_text("a,b\n1,2\n")
    return path


def _refused(err: str, message: str) -> None:
    """The CLI's refusal: one error line and one hint line, and nothing else (no work started)."""
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("vinci-edge: error: ") and message in lines[0], err
    assert lines[1].startswith("vinci-edge: hint: "), err


def _export(capsys, ckpt: Path, out: Path | str, *extra: str) -> tuple[int, str]:
    rc = run(["export", "--checkpoint", str(ckpt), "--out", str(out), *extra])
    return rc, capsys.readouterr().err


def _cli(*argv: str) -> list[str]:
    """`vinci-edge ARGV` as a separate process of this Python, importing this checkout."""
    return [sys.executable, "-m", "vinci_edge.cli", *argv]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def ckpt(tiny_ckpt, tmp_path) -> Path:
    """A copy of the tiny checkpoint: the tests that aim --out at it never risk the session's one."""
    return Path(shutil.copytree(tiny_ckpt, tmp_path / "ckpt"))


def test_the_kinds_recognise_what_export_and_init_checkpoint_write(tiny_engine, tiny_ckpt):
    from vinci_edge.manifest import FORMAT

    assert ENGINE_FORMAT == FORMAT
    assert is_engine_folder(tiny_engine) and not is_engine_folder(tiny_ckpt)
    assert is_checkpoint_folder(tiny_ckpt) and not is_checkpoint_folder(tiny_engine)


def test_force_never_replaces_a_folder_of_user_files(tiny_ckpt, tmp_path, capsys):
    mine = _user_folder(tmp_path / "mine")
    before = _files(mine)
    rc, err = _export(capsys, tiny_ckpt, mine, "--force")
    assert rc == 2
    _refused(err, "is not an engine folder: --force will not replace it")
    rc, err = _export(capsys, tiny_ckpt, mine)
    assert rc == 2
    _refused(err, "already exists and holds files that are not an engine")
    assert _files(mine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no partial folder either


def test_out_is_never_the_input_inside_it_or_holding_it(ckpt, tmp_path, capsys):
    before = _files(ckpt)
    for out, message in (
        (ckpt, "--out is the input checkpoint"),
        (ckpt / "engine", "is inside the input checkpoint"),
        (tmp_path, "holds the input checkpoint"),
    ):
        rc, err = _export(capsys, ckpt, out, "--force")
        assert rc == 2
        _refused(err, message)
    assert _files(ckpt) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_out_is_never_the_current_folder_or_one_above_it(tiny_ckpt, tmp_path, capsys, monkeypatch):
    here = _user_folder(tmp_path / "project" / "here")
    before = _files(tmp_path)
    monkeypatch.chdir(here)
    for out, message in (
        (".", "is the current folder"),
        (str(here), "is the current folder"),
        ("..", "is a folder above the current one"),
    ):
        rc, err = _export(capsys, tiny_ckpt, out, "--force")
        assert rc == 2
        _refused(err, message)
    assert _files(tmp_path) == before


def test_a_file_where_the_folder_should_be(tiny_ckpt, tmp_path, capsys):
    file = tmp_path / "engine"
    file.write_text("not a folder")
    rc, err = _export(capsys, tiny_ckpt, file, "--force")
    assert rc == 2
    _refused(err, "is a file, not a folder")
    rc, err = _export(capsys, tiny_ckpt, file / "inside")
    assert rc == 2
    _refused(err, f"cannot make --out {file / 'inside'}: {file} is a file, not a folder")
    assert file.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["engine"]


def _read_only(folder: Path, argv: list[str]) -> list[str]:
    """`argv` run with `folder` read-only for it. chmod 0o555 where it binds (not root); as root,
    inside a private mount namespace (`unshare -m`) where an empty read-only tmpfs covers `folder`:
    the mount exists only for that process and goes with it. Skips when neither can be done."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return argv
    mount = [
        "unshare",
        "-m",
        "sh",
        "-c",
        'mount -t tmpfs -o ro,size=64k tmpfs "$0" && exec "$@"',
        str(folder),
    ]
    writes = ["sh", "-c", '! touch "$0/probe" 2>/dev/null', str(folder)]  # succeeds when the write fails
    if shutil.which("unshare") is None or subprocess.run([*mount, *writes], check=False).returncode != 0:
        pytest.skip(
            "running as root, where chmod does not stop writes, and a read-only tmpfs cannot be mounted "
            "in a private mount namespace here (unshare -m needs CAP_SYS_ADMIN)"
        )
    return [*mount, *argv]


@pytest.mark.slow
def test_a_read_only_parent_is_refused_before_any_work(tiny_ckpt, tiny_engine, clip, tmp_path):
    """Real commands, each as its own process: export into a read-only folder, and profile /
    quant-report whose --out lies there, all refused before they load or measure anything."""
    ro = tmp_path / "ro"
    ro.mkdir()
    commands = {
        "export": (["export", "--checkpoint", str(tiny_ckpt), "--out", str(ro / "engine")], "read-only"),
        "profile": (
            ["profile", "--engine", str(tiny_engine), "--video", str(clip), "--out", str(ro / "prof")],
            "cannot write into",
        ),
        "quant-report": (
            ["quant-report", "--engine", str(tiny_engine), "--variant", str(tiny_engine), "--out", str(ro)],
            "cannot write into",
        ),
    }
    try:
        for name, (argv, message) in commands.items():
            cmd = _read_only(ro, _cli(*argv))
            done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300, check=False)
            assert done.returncode == 2, (name, done.stderr)
            _refused(done.stderr, message)
    finally:
        ro.chmod(0o755)
    assert not os.path.ismount(ro) and list(ro.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"]


def test_profile_and_quant_report_check_their_out_before_measuring(tiny_engine, clip, tmp_path, capsys):
    file = tmp_path / "results"
    file.write_text("mine")
    assert run(["profile", "--engine", str(tiny_engine), "--video", str(clip), "--out", str(file)]) == 2
    _refused(capsys.readouterr().err, f"--out {file} is a file, not a folder")
    argv = ["quant-report", "--engine", str(tiny_engine), "--variant", str(tiny_engine)]
    assert run([*argv, "--out", str(file / "report")]) == 2
    _refused(capsys.readouterr().err, f"cannot make --out {file / 'report'}: {file} is a file")
    assert file.read_text() == "mine"


@pytest.mark.slow
def test_a_partial_folder_left_by_a_killed_export_is_removed_and_said(tiny_ckpt, tmp_path):
    """SIGKILL cannot be caught: the partial folder stays. The next run into the same --out removes
    it, says so, and writes the engine."""
    out = tmp_path / "engine"
    argv = _cli("export", "--checkpoint", str(tiny_ckpt), "--out", str(out))
    _stop_when_writing(subprocess.Popen(argv, stderr=subprocess.DEVNULL, env=_env()), out, signal.SIGKILL)
    assert partial_folder(out).is_dir() and not out.exists()
    said: list[str] = []
    with output_folder(out, kind=ENGINE, progress=said.append) as tmp:
        assert tmp == partial_folder(out) and list(tmp.iterdir()) == []
        (tmp / "manifest.json").write_text(json.dumps({"format": ENGINE_FORMAT}))
    assert said == ["removed .engine.partial, left by a run that did not finish"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine"] and is_engine_folder(out)


@pytest.mark.slow
def test_sigterm_mid_export_leaves_no_partial_folder_and_no_engine(tiny_ckpt, tmp_path):
    out = tmp_path / "engines" / "tiny"
    proc = subprocess.Popen(
        _cli("export", "--checkpoint", str(tiny_ckpt), "--out", str(out)),
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    _stop_when_writing(proc, out, signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM: removed the unfinished .tiny.partial" in err
    assert list(tmp_path.iterdir()) == []  # nor the engines/ folder made for it


def _stop_when_writing(proc: subprocess.Popen, out: Path, sig: signal.Signals) -> None:
    """Send `sig` once the export has written a stage file into its partial folder; wait for the end."""
    tmp, deadline = partial_folder(out), time.monotonic() + 120
    while not (tmp.is_dir() and any(tmp.glob("*.onnx"))):
        assert proc.poll() is None, "the export ended before it was stopped"
        assert time.monotonic() < deadline, "the export wrote no stage file in 120 s"
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.wait(timeout=60)


def test_an_exception_inside_the_block_leaves_nothing(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "new" / "deeper" / "engine"
    for stop in (RuntimeError("No space left on device"), KeyboardInterrupt()):
        with pytest.raises(type(stop)), output_folder(out, kind=ENGINE) as tmp:
            (tmp / "decoder.onnx").write_bytes(b"half a graph")
            raise stop
        assert list(tmp_path.iterdir()) == []  # the partial folder and the folders made for it
    assert signal.getsignal(signal.SIGTERM) is before


def test_force_replaces_an_engine_and_a_failure_keeps_the_old_one(tmp_path):
    out = tmp_path / "engine"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"format": ENGINE_FORMAT, "v": 1}))
    old = _files(out)
    with pytest.raises(EngineError, match="already exists"), output_folder(out, kind=ENGINE, force=False):
        pass
    with pytest.raises(OSError), output_folder(out, kind=ENGINE, force=True) as tmp:
        raise OSError("disk full")
    assert _files(out) == old
    with output_folder(out, kind=ENGINE, force=True) as tmp:
        (tmp / "manifest.json").write_text(json.dumps({"format": ENGINE_FORMAT, "v": 2}))
    assert json.loads((out / "manifest.json").read_text())["v"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine"]  # nothing set aside remains


def test_init_checkpoint_refuses_a_folder_that_is_not_a_checkpoint(tmp_path, capsys):
    from vinci_edge.model.checkpoint import init_checkpoint

    mine = _user_folder(tmp_path / "mine")
    before = _files(mine)
    assert run(["init-checkpoint", "--preset", "tiny", "--out", str(mine), "--config-only"]) == 2
    _refused(capsys.readouterr().err, "already exists and holds files that are not a checkpoint")
    with pytest.raises(CheckpointError, match="holds files that are not a checkpoint") as info:
        init_checkpoint("tiny", mine)
    assert isinstance(info.value, OutputFolderError) and info.value.hint
    assert _files(mine) == before
    # an empty folder holds nothing to lose: it is written; a checkpoint is never written over
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(["init-checkpoint", "--preset", "tiny", "--out", str(empty), "--config-only"]) == 0
    assert is_checkpoint_folder(empty)
    capsys.readouterr()
    assert run(["init-checkpoint", "--preset", "tiny", "--out", str(empty), "--config-only"]) == 2
    _refused(capsys.readouterr().err, "already holds a checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mine"]
