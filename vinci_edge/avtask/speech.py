"""Spoken words for the task, synthesised by Debian's `espeak-ng` once per (word, voice) and cached.

espeak-ng is deterministic, so a word spoken by one voice at one speed is the same samples on every
machine with the same espeak-ng build; the task varies voices and speeds to make word recognition a
task and not a lookup.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from vinci_edge.errors import MissingDependencyError

ESPEAK = "espeak-ng"


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


class WordBank:
    """`word(text, voice, rate)` -> float32 samples at `rate`, leading and trailing silence cut."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, int], np.ndarray] = {}

    def word(self, text: str, voice: str, rate: int) -> np.ndarray:
        key = (text, voice, rate)
        if key not in self._cache:
            self._cache[key] = _trim(_resample(*_speak(text, voice), rate))
        return self._cache[key]


def _speak(text: str, voice: str) -> tuple[np.ndarray, int]:
    if not espeak_available():
        raise MissingDependencyError(
            "espeak-ng is not installed (the task's spoken words are made with it)",
            hint="install it: sudo apt-get install espeak-ng (scripts/setup.sh does)",
        )
    name, _, speed = voice.partition(":")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "w.wav"
        subprocess.run(
            [ESPEAK, "-v", name or "en-us", "-s", speed or "170", "-w", str(out), text],
            check=True,
            capture_output=True,
        )
        with wave.open(str(out)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return pcm.astype(np.float32) / 32768.0, rate


def _resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear interpolation after a 3-tap smoothing; speech at 22.05 kHz has little above 8 kHz."""
    if rate == target:
        return x
    smooth = np.convolve(x, np.array([0.25, 0.5, 0.25], np.float32), mode="same")
    t = np.arange(int(x.size * target / rate)) * (rate / target)
    return np.interp(t, np.arange(x.size), smooth).astype(np.float32)


def _trim(x: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > threshold * max(float(np.abs(x).max()), 1e-6))
    return x[loud[0] : loud[-1] + 1] if loud.size else x
