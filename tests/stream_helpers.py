"""Network streams for the live tests: Debian's ffmpeg command serving or pushing a clip on loopback
(killed and started again by the tests that check losses and reconnects)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None, reason="the ffmpeg command is not installed (apt-get install ffmpeg)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ffmpeg(*args: str) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        [FFMPEG, "-hide_banner", "-loglevel", "error", *args], stdin=subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=5)


def serve_http(clip: Path, url: str):
    """ffmpeg serving `clip` over HTTP at `url` in real time, looped, until the context ends."""
    return ffmpeg(
        "-re", "-stream_loop", "-1", "-i", str(clip), "-c", "copy", "-f", "mpegts", "-listen", "1", url
    )
