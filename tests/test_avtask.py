"""The synthetic task's generator: deterministic, its labels true of the media it writes (checked on
the decoded MP4, through the same FFmpeg path as any user's file), its questions answerable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vinci_edge.avtask.dataset import HELD_OUT_SEEDS, TRAIN_SEEDS, example, read_split, write_split
from vinci_edge.avtask.questions import CATEGORIES, normalise, questions_for
from vinci_edge.avtask.render import event_span
from vinci_edge.avtask.scene import COLOURS, DURATION, FPS, Scene, sample_scene
from vinci_edge.avtask.speech import WordBank, espeak_available
from vinci_edge.media.decode import decode_audio, decode_video

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


def _seeds_with(kinds: set[str], count: int) -> list[int]:
    """Held-out seeds whose scenes have every sound kind of `kinds` (the test covers them all)."""
    found = []
    for seed in HELD_OUT_SEEDS:
        if kinds <= {s.kind for s in sample_scene(seed).sounds}:
            found.append(seed)
            if len(found) == count:
                return found
    raise AssertionError("no such seed")


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    folder = tmp_path_factory.mktemp("split")
    seeds = _seeds_with({"beeps", "tone", "alarm", "word"}, 3)
    write_split(folder, seeds)
    return folder, seeds


def test_a_seed_is_one_scene_frames_and_samples():
    words = WordBank()
    a, b = example(1234, words), example(1234, words)
    assert a.scene == b.scene
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.samples, b.samples)
    assert a.scene != sample_scene(1235)
    assert Scene.from_dict(json.loads(json.dumps(a.scene.to_dict()))) == a.scene


def test_held_out_seeds_never_meet_training_seeds():
    assert set(HELD_OUT_SEEDS).isdisjoint(TRAIN_SEEDS)
    from vinci_edge.training.loop import step_seeds  # the seeds a training run draws
    from vinci_edge.training.recipe import Recipe

    drawn = {s for step in range(0, 5000, 7) for s in step_seeds(step, Recipe(seed=3))}
    assert drawn <= set(TRAIN_SEEDS)


def test_each_sound_is_where_its_label_says_in_the_decoded_file(split):
    folder, seeds = split
    words = WordBank()
    for seed in seeds:
        scene = sample_scene(seed)
        audio = decode_audio(folder / "clips" / f"{seed}.mp4", scene.sample_rate).samples
        sr = scene.sample_rate
        hiss = np.sqrt(np.mean(audio[: int(0.04 * sr)] ** 2)) + 1e-4  # no event starts before 0.05 s
        for ev in scene.sounds:
            lo, hi = event_span(scene, ev.kind, words)
            inside = audio[int(lo * sr) : int(hi * sr)]
            # loud inside its span, and (the second before the event) quiet
            assert np.sqrt(np.mean(inside**2)) > 4 * hiss, (seed, ev)
            if ev.second > 0 and not any(o.second == ev.second - 1 for o in scene.sounds):
                before = audio[int((ev.second - 0.9) * sr) : int((ev.second - 0.05) * sr)]
                assert np.sqrt(np.mean(before**2)) < 3 * hiss, (seed, ev)


def test_beep_counts_and_tone_pitch_are_in_the_decoded_file(split):
    folder, seeds = split
    words = WordBank()
    for seed in seeds:
        scene = sample_scene(seed)
        audio = decode_audio(folder / "clips" / f"{seed}.mp4", scene.sample_rate).samples
        sr = scene.sample_rate
        beeps = scene.sound("beeps")
        lo, hi = event_span(scene, "beeps", words)
        env = np.abs(audio[int(lo * sr) - 160 : int(hi * sr) + 160])
        frames = env[: env.size // 160 * 160].reshape(-1, 160).mean(axis=1)  # 10 ms frames
        loud = frames > 0.5 * frames.max()
        onsets = int(np.sum(loud[1:] & ~loud[:-1]) + loud[0])
        assert onsets == int(beeps.detail), (seed, beeps)
        tone = scene.sound("tone")
        lo, hi = event_span(scene, "tone", words)
        spectrum = np.abs(np.fft.rfft(audio[int(lo * sr) : int(hi * sr)]))
        peak = np.fft.rfftfreq(int(hi * sr) - int(lo * sr), 1 / sr)[np.argmax(spectrum)]
        assert (peak > 800) == (tone.detail == "high"), (seed, tone, peak)


def test_each_shape_is_on_screen_exactly_when_its_label_says(split):
    folder, seeds = split
    for seed in seeds:
        scene = sample_scene(seed)
        n = DURATION * FPS
        frames = decode_video(folder / "clips" / f"{seed}.mp4", n, load_audio=False).frames
        assert len(frames) == n
        for shape in scene.shapes:
            colour = np.array(COLOURS[shape.colour], np.int32)
            for k, frame in enumerate(frames):
                close = np.abs(frame.astype(np.int32) - colour).max(axis=-1) < 40
                visible = shape.start <= k / FPS < shape.end
                # a shape covers hundreds of pixels of its own colour (another shape may hide part)
                if visible:
                    assert close.sum() > 150 or _hidden(scene, shape, k / FPS), (seed, shape, k)
                else:
                    assert close.sum() < 20, (seed, shape, k)


def _hidden(scene, shape, t) -> bool:
    later = scene.shapes[scene.shapes.index(shape) + 1 :]
    return any(o.start <= t < o.end for o in later)


def test_written_questions_are_the_scene_questions(split):
    folder, seeds = split
    written = list(read_split(folder))
    expected = [q for seed in seeds for q in questions_for(sample_scene(seed))]
    assert [h.question for h in written] == expected
    assert {q.category for q in expected} == set(CATEGORIES)
    assert json.loads((folder / "split.json").read_text())["questions"] == len(expected)


def test_answers_follow_from_the_scene():
    for seed in range(200):
        scene = sample_scene(seed)
        for q in questions_for(scene):
            if q.template == "count_shapes":
                assert q.answer == str(len(scene.shapes))
            if q.template == "alarm_second":
                assert q.answer == str(scene.sound("alarm").second)
            if q.template == "colour_at_alarm":
                on = scene.shapes_at(scene.sound("alarm").second)
                assert len(on) == 1 and q.answer == on[0].colour
            if q.template == "beep_or_shape_first":
                shape = next(s for s in scene.shapes if s.shape in q.question and s.colour in q.question)
                assert (q.answer == "beep") == (scene.sound("beeps").second < shape.start)


def test_normalise_ignores_case_space_and_punctuation():
    assert normalise("  Red.") == "red"
    assert normalise('"3"') == "3"
    assert normalise("red square") != "red"
