"""The one rule for every command that writes an output folder: nothing the user owns is ever lost.

    with output_folder(out, kind=ENGINE, force=force, inputs={"checkpoint": ckpt}) as tmp:
        ...  # write everything into tmp (a hidden sibling, .NAME.partial)

Before any work, `--out` is refused when it is
  - the current folder or a folder above it, or an input (or inside one, or holding one);
  - a file, a symbolic link or a mount point (the finished folder is renamed into place);
  - an existing folder that is not empty, unless the command has --force, it was given, and the folder
    is one vinci-edge made (`kind.is_one`: an engine's manifest, a checkpoint's root config);
  - below a file, or in a folder this user cannot write (the partial folder is really made, so a
    read-only file system is found too, whoever runs it).
A `.NAME.partial` left by a run that was killed is removed (and said). The work writes into the
partial folder; any exception, Ctrl-C or SIGTERM removes it again (with the folders made for it),
and success renames it to `out` at the very end, setting the replaced folder aside until the new
one is in place. Commands that write files into a folder (profile, quant-report) call
`check_writable_dir` before they measure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from vinci_edge.errors import CheckpointError, EngineError, VinciEdgeError
from vinci_edge.progress import Progress, silent

# The engine manifest's "format" (vinci_edge.manifest.FORMAT) and the root config's model types
# of the nvidia/omnivinci layout (vinci_edge.config.load_config): spelt here because this module sits
# below both; tests/test_output_folder.py checks that they agree.
ENGINE_FORMAT = "vinci-edge-engine"
CHECKPOINT_MODEL_TYPES = ("vila", "omnivinci")


class OutputFolderError(VinciEdgeError):
    """`--out` cannot be written, or writing it could lose something the user owns."""


class EngineFolderError(OutputFolderError, EngineError):
    """An engine's `--out` is refused (an `EngineError` too, as every engine refusal is)."""


class CheckpointFolderError(OutputFolderError, CheckpointError):
    """A checkpoint's `--out` is refused (a `CheckpointError` too)."""


class Terminated(SystemExit):
    """SIGTERM while an output folder is written: raised so the partial folder is removed, then the
    process exits with 143, the status a shell gives a process that SIGTERM ended."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


@dataclass(frozen=True)
class FolderKind:
    """What a command writes: its name in messages, how to tell a folder vinci-edge made of that kind
    (the only kind of non-empty folder --force may replace), and the error its refusals raise."""

    name: str
    is_one: Callable[[Path], bool]
    error: type[OutputFolderError]


def is_engine_folder(folder: Path) -> bool:
    """An engine folder: manifest.json that says it is a vinci-edge engine."""
    return _json_field(folder / "manifest.json", "format") == ENGINE_FORMAT


def is_checkpoint_folder(folder: Path) -> bool:
    """A checkpoint folder: a root config.json of the nvidia/omnivinci layout."""
    return _json_field(folder / "config.json", "model_type") in CHECKPOINT_MODEL_TYPES


ENGINE = FolderKind("an engine", is_engine_folder, EngineFolderError)
CHECKPOINT = FolderKind("a checkpoint", is_checkpoint_folder, CheckpointFolderError)


def partial_folder(out: str | Path) -> Path:
    """Where the output is written until it is complete: the hidden sibling `.NAME.partial`."""
    path = _absolute(out)
    return path.with_name(f".{path.name}.partial")


@contextlib.contextmanager
def output_folder(
    out: str | Path,
    *,
    kind: FolderKind,
    force: bool | None = None,
    inputs: Mapping[str, str | Path] | None = None,
    progress: Progress | None = None,
) -> Iterator[Path]:
    """Check `out` (see `check_output_folder`), make its partial folder and yield it; on success
    the partial folder becomes `out`, on any failure it is removed. `force` is the command's
    --force (None: the command has none, so nothing is ever replaced); `inputs` names the folders
    and files the work reads ({"checkpoint": path}), which `out` must stay clear of."""
    say = progress or silent
    path = check_output_folder(out, kind=kind, force=force, inputs=inputs)
    tmp = partial_folder(path)
    _remove_leftovers(path, kind, say)
    made = [d for d in tmp.parents if not d.exists()]  # the folders this run makes, deepest first
    try:
        with _sigterm_raises():
            _make(tmp, out, kind)
            yield tmp
        _move_into_place(tmp, path, out, kind, force)
    except BaseException as exc:
        _discard(tmp, made)
        if isinstance(exc, Terminated):
            say(f"stopped by SIGTERM: removed the unfinished {tmp.name}")
        raise


def check_output_folder(
    out: str | Path,
    *,
    kind: FolderKind,
    force: bool | None = None,
    inputs: Mapping[str, str | Path] | None = None,
) -> Path:
    """Refuse an `out` that cannot be written or whose writing could lose something; return its
    absolute path. Reads only: a command calls it with its other checks, before any work."""
    path = _absolute(out)
    _refuse_the_current_folder(out, path, kind)
    _refuse_the_inputs(out, path, inputs or {}, kind)
    _refuse_what_is_there(out, path, kind, force)
    _refuse_an_unwritable_parent(out, path.parent, kind)
    return path


def check_writable_dir(out: str | Path) -> None:
    """For commands that write files into a folder (profile, quant-report): refuse, before they
    measure, an `out` that is a file or cannot be made or written, rather than lose the results."""
    path = _absolute(out)
    if path.exists() and not path.is_dir():
        raise OutputFolderError(f"--out {out} is a file, not a folder", hint="choose another --out folder")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise OutputFolderError(
            f"cannot make --out {out}: {existing} is a file, not a folder", hint="choose another --out folder"
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OutputFolderError(
            f"cannot write into {existing} (for --out {out}): {exc.strerror}",
            hint="choose an --out folder this user can write to",
        ) from exc


# ---- the checks ----------------------------------------------------------------------------------
def _refuse_the_current_folder(out: str | Path, path: Path, kind: FolderKind) -> None:
    """Replacing the current folder (or one above it) would take the user's working folder with it."""
    real, cwd = path.resolve(), Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        where = "the current folder" if real == cwd else "a folder above the current one"
        raise kind.error(
            f"--out {out} is {where}", hint=f"name a new folder for {kind.name}, e.g. --out ./NAME"
        )


def _refuse_the_inputs(
    out: str | Path, path: Path, inputs: Mapping[str, str | Path], kind: FolderKind
) -> None:
    """The output never replaces, holds, or sits inside what the work reads."""
    real = path.resolve()
    for label, given in inputs.items():
        source = Path(given).resolve()
        if real == source:
            raise kind.error(
                f"--out is the input {label}", hint="choose another --out: an input is never written over"
            )
        if source in real.parents:
            raise kind.error(
                f"--out {out} is inside the input {label} {given}", hint="write the output outside the input"
            )
        if real in source.parents:
            raise kind.error(
                f"--out {out} holds the input {label} {given}", hint="choose an --out that does not hold it"
            )


def _refuse_what_is_there(out: str | Path, path: Path, kind: FolderKind, force: bool | None) -> None:
    """Only a new path, an empty folder, or (with --force) a folder of `kind` that we made."""
    if path.is_symlink():
        raise kind.error(
            f"--out {out} is a symbolic link", hint="give the folder itself: a link is never written through"
        )
    if not path.exists():
        return
    another = "choose another --out: a new path or an empty folder"
    if not path.is_dir():
        raise kind.error(f"--out {out} is a file, not a folder", hint=another)
    if os.path.ismount(path):
        raise kind.error(
            f"--out {out} is a mount point",
            hint="write into a folder inside it (the output is made next to --out and renamed into place)",
        )
    if _is_empty(path) or (force and kind.is_one(path)):
        return
    if kind.is_one(path):
        if force is None:
            raise kind.error(f"{out} already holds {kind.name}", hint=another)
        raise kind.error(f"{out} already exists", hint="choose another --out or pass --force to replace it")
    if force:
        raise kind.error(
            f"{out} exists and is not {kind.name} folder: --force will not replace it",
            hint=f"{another}, or {kind.name} folder to replace",
        )
    raise kind.error(f"{out} already exists and holds files that are not {kind.name}", hint=another)


def _refuse_an_unwritable_parent(out: str | Path, parent: Path, kind: FolderKind) -> None:
    """Found now, not after the work: a file on the way, or a folder this user cannot write."""
    existing = _nearest_existing(parent)
    if not existing.is_dir():
        raise kind.error(
            f"cannot make --out {out}: {existing} is a file, not a folder", hint="choose another --out"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise kind.error(
            f"cannot write --out {out}: {existing} is read-only for this user",
            hint="choose an --out in a folder this user can write to",
        )


# ---- the protocol --------------------------------------------------------------------------------
def _remove_leftovers(path: Path, kind: FolderKind, say: Progress) -> None:
    """A killed run (SIGKILL, power loss) leaves its partial folder, or, if it died while moving the
    result into place, the folder it was replacing: both are ours, and in the way."""
    tmp = partial_folder(path)
    if tmp.exists() or tmp.is_symlink():
        _remove(tmp)
        say(f"removed {tmp.name}, left by a run that did not finish")
    aside = _aside_folder(path)
    if aside.is_dir() and not aside.is_symlink() and (kind.is_one(aside) or _is_empty(aside)):
        shutil.rmtree(aside)
        say(f"removed {aside.name}, left by a run that did not finish replacing {path.name}")


def _make(tmp: Path, out: str | Path, kind: FolderKind) -> None:
    """Make the partial folder: the real test that the parent can be written (root included)."""
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise kind.error(
            f"cannot write --out {out}: {exc.strerror} ({exc.filename})",
            hint="choose an --out in a folder this user can write to",
        ) from exc


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the work runs, SIGTERM raises `Terminated` (so the cleanup runs) instead of ending the
    process on the spot. Only from the main thread (the only one Python delivers signals to), and
    only over the default action: a handler someone else installed (or SIG_IGN) is their policy."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _move_into_place(tmp: Path, path: Path, out: str | Path, kind: FolderKind, force: bool | None) -> None:
    """Rename the finished folder to `out`. A folder already there is checked again (files may have
    been put there while the work ran) and set aside until the new one is in place."""
    if not (path.exists() or path.is_symlink()):
        tmp.rename(path)
        return
    _refuse_what_is_there(out, path, kind, force)
    aside = _aside_folder(path)
    path.rename(aside)
    try:
        tmp.rename(path)
    except BaseException:
        aside.rename(path)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _discard(tmp: Path, made: list[Path]) -> None:
    """Remove the partial folder and the (still empty) folders made for it."""
    _remove(tmp)
    for folder in made:
        with contextlib.suppress(OSError):
            folder.rmdir()


# ---- helpers -------------------------------------------------------------------------------------
def _absolute(out: str | Path) -> Path:
    """Absolute, with `.` and `..` folded, links kept (so `--out .` has a name to check)."""
    return Path(os.path.abspath(out))


def _aside_folder(path: Path) -> Path:
    return path.with_name(f".{path.name}.replaced")


def _is_empty(folder: Path) -> bool:
    """An empty folder holds nothing to lose; one this user cannot list counts as full."""
    try:
        return not any(folder.iterdir())
    except OSError:
        return False


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _json_field(path: Path, key: str) -> object:
    """`key` of the JSON object in `path`, or None when the file is missing or not such an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def write_texts(out: Path, texts: dict[str, str]) -> list[Path]:
    """Each file name -> text into `out`, each through a hidden `.NAME.partial` renamed over it, so a
    reader never sees half a report and only these names are ever replaced."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in texts.items():
        path = out / name
        tmp = path.with_name(f".{name}.partial")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        paths.append(path)
    return paths
