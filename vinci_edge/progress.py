"""Progress messages: what long work says while it runs.

Every command that takes more than a moment (export, quantize, profile, ...) takes a `Progress`
callable and calls it with one short line per step; the CLI passes `to_stderr`, library callers pass
their own or nothing (`silent`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

Progress = Callable[[str], None]


def silent(msg: str) -> None:
    """A `Progress` that says nothing (the default of library calls)."""


def to_stderr(msg: str) -> None:
    """The command line's `Progress`: one `[vinci-edge] ...` line on stderr, flushed."""
    print(f"[vinci-edge] {msg}", file=sys.stderr, flush=True)


def to_stderr_as(command: str) -> Progress:
    """`to_stderr` with the command's name in front: `[vinci-edge] quantize: ...`."""
    return lambda msg: to_stderr(f"{command}: {msg}")
