"""A scene: what is on screen and what is heard, and when, sampled from one seed.

Time is laid out in whole-second slots: a shape is on screen for whole seconds [start, end), a sound
event starts at the top of a second and ends within it. Frames are sampled by the model at
`round(linspace(0, n - 1, 8))` of the clip's 32 frames (4 fps), which puts exactly one sampled frame
in every one-second slot, so anything the questions ask about is in the frames the model sees.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

DURATION = 8  # seconds
FPS = 4
SIZE = 128  # frames are SIZE x SIZE RGB
SAMPLE_RATE = 16000

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 70),
    "blue": (50, 100, 235),
    "yellow": (235, 215, 40),
}
SHAPES = ("circle", "square", "triangle")
WORDS = ("stop", "start", "left", "right", "open", "close")
SOUND_KINDS = ("beeps", "tone", "alarm", "word")
PITCHES = ("low", "high")


@dataclass(frozen=True)
class ShapeEvent:
    shape: str
    colour: str
    start: int  # on screen for seconds [start, end)
    end: int
    size: int  # pixels across
    path: tuple[float, float, float, float]  # centre (x0, y0) at start -> (x1, y1) at end, in pixels

    def visible(self, second: int) -> bool:
        return self.start <= second < self.end


@dataclass(frozen=True)
class SoundEvent:
    kind: str  # one of SOUND_KINDS
    second: int  # starts at this second, ends within it
    detail: str  # beeps: the count; tone: "low" / "high"; word: the word; alarm: ""
    voice: str = ""  # word: the espeak-ng voice and speed it is spoken with
    gain: float = 0.4


@dataclass(frozen=True)
class Scene:
    seed: int
    shapes: tuple[ShapeEvent, ...]
    sounds: tuple[SoundEvent, ...]
    background: tuple[int, int, int]
    noise: float  # standard deviation of the background hiss
    duration: int = DURATION
    fps: int = FPS
    size: int = SIZE
    sample_rate: int = SAMPLE_RATE
    extra: dict[str, Any] = field(default_factory=dict)

    def sound(self, kind: str) -> SoundEvent | None:
        return next((s for s in self.sounds if s.kind == kind), None)

    def shapes_at(self, second: int) -> list[ShapeEvent]:
        return [s for s in self.shapes if s.visible(second)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scene:
        d = dict(d)
        d["shapes"] = tuple(ShapeEvent(**{**s, "path": tuple(s["path"])}) for s in d["shapes"])
        d["sounds"] = tuple(SoundEvent(**s) for s in d["sounds"])
        d["background"] = tuple(d["background"])
        return cls(**d)


VOICES = ("en-us", "en-us+m3", "en-us+f2", "en+m7", "en-us+f4", "en+m2")
SPEEDS = (150, 170, 190)


def sample_scene(seed: int) -> Scene:
    """The scene of one seed: one to three shapes of distinct kinds and colours, and one to four
    sound events of distinct kinds in distinct seconds."""
    rng = np.random.default_rng(seed)
    n_shapes = int(rng.integers(1, 4))
    kinds = rng.permutation(len(SHAPES))[:n_shapes]
    colours = rng.permutation(len(COLOURS))[:n_shapes]
    names = list(COLOURS)
    shapes = []
    for k, c in zip(kinds, colours):
        start = int(rng.integers(0, DURATION - 1))
        end = int(rng.integers(start + 2, min(DURATION, start + 5) + 1))
        size = int(rng.integers(34, 47))
        margin = size / 2 + 2
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(margin, SIZE - margin, 4))
        shapes.append(ShapeEvent(SHAPES[k], names[c], start, end, size, (x0, y0, x1, y1)))

    present = [k for k in SOUND_KINDS if rng.random() < 0.7] or [SOUND_KINDS[int(rng.integers(4))]]
    seconds = rng.permutation(DURATION)[: len(present)]
    sounds = []
    for kind, second in zip(present, seconds):
        detail, voice = "", ""
        if kind == "beeps":
            detail = str(int(rng.integers(1, 4)))
        elif kind == "tone":
            detail = PITCHES[int(rng.integers(2))]
        elif kind == "word":
            detail = WORDS[int(rng.integers(len(WORDS)))]
            voice = f"{VOICES[int(rng.integers(len(VOICES)))]}:{SPEEDS[int(rng.integers(len(SPEEDS)))]}"
        sounds.append(SoundEvent(kind, int(second), detail, voice, float(rng.uniform(0.25, 0.5))))
    sounds.sort(key=lambda s: s.second)

    background = tuple(int(v) for v in rng.integers(10, 60, 3))
    return Scene(seed, tuple(shapes), tuple(sounds), background, float(rng.uniform(0.002, 0.01)))
