"""The question templates, by category, and each one's answer read off the scene.

    vision       colour of a shape, shape of a colour, how many shapes
    audio        which word, how many beeps, the tone's pitch, whether an alarm sounds
    av_temporal  what was on screen when a sound happened, which came first, a word during a shape
    time         at what second something happened

A template is asked only where its answer is unambiguous in what the model sees (the sampled frames
and the audio). Answers are one word or one number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from vinci_edge.avtask.scene import Scene

CATEGORIES = ("vision", "audio", "av_temporal", "time")
# What the Qwen2 chat template says when the prompt has no system message of its own.
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass(frozen=True)
class Question:
    category: str
    template: str  # the template's name
    question: str
    answer: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def questions_for(scene: Scene) -> list[Question]:
    """Every question the scene answers, in a fixed order."""
    out: list[Question] = []
    for category, template, make in _TEMPLATES:
        for question, answer in make(scene):
            out.append(Question(category, template, question, answer))
    return out


def normalise(text: str) -> str:
    """How answers are compared: lower case, surrounding punctuation and spaces dropped."""
    return text.strip().strip(".!?,;:\"'").strip().lower()


# ---- vision ---------------------------------------------------------------------------------------


def _colour_of_shape(scene: Scene):
    for s in scene.shapes:
        yield f"What colour is the {s.shape}?", s.colour


def _shape_of_colour(scene: Scene):
    for s in scene.shapes:
        yield f"Which shape is {s.colour}?", s.shape


def _count_shapes(scene: Scene):
    yield "How many shapes appear?", str(len(scene.shapes))


# ---- audio ----------------------------------------------------------------------------------------


def _word(scene: Scene):
    ev = scene.sound("word")
    if ev:
        yield "Which word is spoken?", ev.detail


def _beeps(scene: Scene):
    ev = scene.sound("beeps")
    if ev:
        yield "How many beeps are there?", ev.detail


def _tone(scene: Scene):
    ev = scene.sound("tone")
    if ev:
        yield "Is the tone high or low?", ev.detail


def _alarm(scene: Scene):
    yield "Does an alarm sound?", "yes" if scene.sound("alarm") else "no"


# ---- audio-visual temporal ------------------------------------------------------------------------


def _colour_at_alarm(scene: Scene):
    ev = scene.sound("alarm")
    if ev and len(on := scene.shapes_at(ev.second)) == 1:
        yield "What colour is on screen when the alarm sounds?", on[0].colour


def _shape_at_word(scene: Scene):
    ev = scene.sound("word")
    if ev and len(on := scene.shapes_at(ev.second)) == 1:
        yield "What shape is on screen when the word is spoken?", on[0].shape


def _beep_or_shape_first(scene: Scene):
    ev = scene.sound("beeps")
    if ev:
        for s in scene.shapes:
            if s.start != ev.second:
                first = "beep" if ev.second < s.start else s.shape
                yield f"Which comes first, the beep or the {s.colour} {s.shape}?", first


def _word_during_shape(scene: Scene):
    ev = scene.sound("word")
    if ev:
        for s in scene.shapes:
            if s.visible(ev.second):
                yield f"Which word is spoken while the {s.shape} is on screen?", ev.detail


# ---- absolute time --------------------------------------------------------------------------------


def _alarm_second(scene: Scene):
    ev = scene.sound("alarm")
    if ev:
        yield "At what second does the alarm sound?", str(ev.second)


def _shape_second(scene: Scene):
    for s in scene.shapes:
        yield f"At what second does the {s.shape} appear?", str(s.start)


def _word_second(scene: Scene):
    ev = scene.sound("word")
    if ev:
        yield "At what second is the word spoken?", str(ev.second)


_TEMPLATES: list[tuple[str, str, Callable[[Scene], object]]] = [
    ("vision", "colour_of_shape", _colour_of_shape),
    ("vision", "shape_of_colour", _shape_of_colour),
    ("vision", "count_shapes", _count_shapes),
    ("audio", "word", _word),
    ("audio", "beeps", _beeps),
    ("audio", "tone", _tone),
    ("audio", "alarm", _alarm),
    ("av_temporal", "colour_at_alarm", _colour_at_alarm),
    ("av_temporal", "shape_at_word", _shape_at_word),
    ("av_temporal", "beep_or_shape_first", _beep_or_shape_first),
    ("av_temporal", "word_during_shape", _word_during_shape),
    ("time", "alarm_second", _alarm_second),
    ("time", "shape_second", _shape_second),
    ("time", "word_second", _word_second),
]
TEMPLATES = tuple(name for _, name, _ in _TEMPLATES)  # every template's name, in order
TEMPLATE_CATEGORY = {name: category for category, name, _ in _TEMPLATES}


def corpus(seeds: range = range(2000)) -> str:
    """The task's text for training its tokenizer: every question, and every answer on a line of its
    own (as it follows the assistant's cue), so each answer word becomes one token."""
    from vinci_edge.avtask.scene import sample_scene

    found = [q for seed in seeds for q in questions_for(sample_scene(seed))]
    lines = sorted({q.question for q in found}) + sorted({q.answer for q in found})
    lines.append(DEFAULT_SYSTEM_PROMPT)
    return "\n".join(lines) + "\n"
