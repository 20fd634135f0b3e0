"""A scene -> its frames (RGB uint8) and its audio (float32 mono at the scene's rate)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from vinci_edge.avtask.scene import COLOURS, Scene, ShapeEvent
from vinci_edge.avtask.speech import WordBank

BEEP_HZ = 1000.0
BEEP_SECONDS, BEEP_GAP = 0.12, 0.13
TONE_HZ = {"low": 330.0, "high": 1320.0}
TONE_SECONDS = 0.7
ALARM_SECONDS = 0.9
ONSET = 0.05  # a sound starts this long after the top of its second


def render_frames(scene: Scene) -> np.ndarray:
    """(duration * fps, size, size, 3) uint8: the background, each shape drawn while it is on screen."""
    n = scene.duration * scene.fps
    frames = np.empty((n, scene.size, scene.size, 3), np.uint8)
    palette = np.array([scene.background] + [COLOURS[s.colour] for s in scene.shapes], np.uint8)
    for k in range(n):
        frames[k] = palette[shape_map(scene, k / scene.fps) + 1]
    return frames


def shape_map(scene: Scene, t: float) -> np.ndarray:
    """(size, size) int: which of `scene.shapes` each pixel shows at time t (-1: the background);
    shapes are drawn in order, a later one over an earlier one."""
    yy, xx = _pixel_centres(scene.size)
    ids = np.full((scene.size, scene.size), -1, np.int64)
    for i, shape in enumerate(scene.shapes):
        if shape.start <= t < shape.end:
            ids[_mask(shape, t, xx, yy)] = i
    return ids


@lru_cache(maxsize=4)
def _pixel_centres(size: int) -> np.ndarray:
    """(2, size, size): each pixel's centre (y, x), made once per frame size (read-only)."""
    grid = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    grid.flags.writeable = False
    return grid


def _mask(shape: ShapeEvent, t: float, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    u = (t - shape.start) / max(shape.end - shape.start, 1)
    x0, y0, x1, y1 = shape.path
    cx, cy, r = x0 + (x1 - x0) * u, y0 + (y1 - y0) * u, shape.size / 2
    dx, dy = xx - cx, yy - cy
    if shape.shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape.shape == "square":
        half = r * 0.85  # same area as the circle, roughly
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    # an upright triangle: apex at the top, base at the bottom
    top, bottom = cy - r, cy + r
    inside_y = (yy >= top) & (yy <= bottom)
    half_width = r * (yy - top) / (2 * r) * 1.15
    return inside_y & (np.abs(dx) <= half_width)


def render_audio(scene: Scene, words: WordBank) -> np.ndarray:
    """(duration * rate,) float32: a faint hiss with each sound event placed at its second."""
    sr = scene.sample_rate
    rng = np.random.default_rng(scene.seed + 1)
    out = (rng.standard_normal(scene.duration * sr) * scene.noise).astype(np.float32)
    for ev in scene.sounds:
        if ev.kind == "beeps":
            clip = _beeps(int(ev.detail), sr)
        elif ev.kind == "tone":
            clip = _envelope(_sine(TONE_HZ[ev.detail], TONE_SECONDS, sr))
        elif ev.kind == "alarm":
            clip = _alarm(sr)
        else:
            clip = words.word(ev.detail, ev.voice, sr)
        start = int((ev.second + ONSET) * sr)
        clip = clip[: sr - int(ONSET * sr)]  # within its second
        out[start : start + clip.size] += ev.gain * clip / max(float(np.abs(clip).max()), 1e-6)
    return np.clip(out, -1.0, 1.0)


def event_span(scene: Scene, kind: str, words: WordBank) -> tuple[float, float] | None:
    """Where a sound event's samples are, in seconds (the labels tests check against)."""
    ev = scene.sound(kind)
    if ev is None:
        return None
    sr = scene.sample_rate
    if kind == "beeps":
        length = int(ev.detail) * (BEEP_SECONDS + BEEP_GAP) - BEEP_GAP
    elif kind == "tone":
        length = TONE_SECONDS
    elif kind == "alarm":
        length = ALARM_SECONDS
    else:
        length = min(words.word(ev.detail, ev.voice, sr).size / sr, 1 - ONSET)
    return ev.second + ONSET, ev.second + ONSET + length


def _sine(hz: float, seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr), dtype=np.float64) / sr
    return np.sin(2 * np.pi * hz * t).astype(np.float32)


def _envelope(x: np.ndarray, ramp: int = 160) -> np.ndarray:
    """10 ms ramps in and out, so an onset is a sound and not a click."""
    ramp = min(ramp, x.size // 2)
    env = np.ones(x.size, np.float32)
    env[:ramp] = np.linspace(0, 1, ramp)
    env[x.size - ramp :] = np.linspace(1, 0, ramp)
    return x * env


def _beeps(count: int, sr: int) -> np.ndarray:
    beep = _envelope(_sine(BEEP_HZ, BEEP_SECONDS, sr), 40)
    gap = np.zeros(int(BEEP_GAP * sr), np.float32)
    parts: list[np.ndarray] = []
    for i in range(count):
        parts += [beep] + ([gap] if i < count - 1 else [])
    return np.concatenate(parts)


def _alarm(sr: int) -> np.ndarray:
    """A siren: two rising sweeps 600 -> 1800 Hz, each 0.45 s."""
    t = np.arange(int(ALARM_SECONDS / 2 * sr), dtype=np.float64) / sr
    f0, f1, span = 600.0, 1800.0, ALARM_SECONDS / 2
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * span))
    sweep = _envelope(np.sin(phase).astype(np.float32))
    return np.concatenate([sweep, sweep])
