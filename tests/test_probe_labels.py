"""The media probe's dense labels (training only) against the media they describe: each labelled
cell of a sampled frame holds its shape's colour, an unlabelled one no shape's worth of any, and the
audio rows labelled with a sound carry its energy while the others hold the hiss."""

from __future__ import annotations

import numpy as np
import pytest

from vinci_edge.avtask.dataset import example
from vinci_edge.avtask.scene import COLOURS, SHAPES
from vinci_edge.avtask.speech import WordBank, espeak_available
from vinci_edge.timeline import sample_frame_indices
from vinci_edge.training.batch import CELL_COVER, SOUND_CLASSES, probe_labels

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")

GRID, ROWS = 4, 200  # the avtask preset: 4 x 4 tokens a frame, 25 audio rows a second over 8 s
SEEDS = range(20, 32)


@pytest.fixture(scope="module")
def clips():
    words = WordBank()
    out = []
    for seed in SEEDS:
        ex = example(seed, words)
        idx = sample_frame_indices(ex.frames.shape[0], 8)
        out.append((ex, idx, probe_labels(ex.scene, idx / ex.scene.fps, words, GRID, ROWS)))
    return out


def _cells(frame: np.ndarray) -> np.ndarray:
    """(GRID * GRID, pixels, 3): a frame's pixels cut into the token grid's cells, row-major."""
    side = frame.shape[0] // GRID
    return frame.reshape(GRID, side, GRID, side, 3).transpose(0, 2, 1, 3, 4).reshape(GRID * GRID, -1, 3)


def test_each_labelled_cell_shows_its_shapes_colour_and_no_other_cell_does(clips):
    labelled = 0
    for ex, idx, labels in clips:
        kinds = {s.colour: s.shape for s in ex.scene.shapes}
        for f, k in enumerate(idx):
            for c, pixels in enumerate(_cells(ex.frames[k])):
                cover = {name: float(np.all(pixels == rgb, axis=1).mean()) for name, rgb in COLOURS.items()}
                colour, shape = labels.cells[f, c]
                if colour == 0:
                    assert shape == 0
                    assert max(cover.values()) < CELL_COVER, (ex.scene.seed, f, c, cover)
                    continue
                name = list(COLOURS)[colour - 1]
                assert cover[name] >= CELL_COVER, (ex.scene.seed, f, c, cover)
                assert SHAPES[shape - 1] == kinds[name]
                labelled += 1
    assert labelled > 100  # the seeds put shapes on screen, so the check above checked something


def test_audio_rows_labelled_with_a_sound_carry_it_and_the_others_hold_the_hiss(clips):
    for ex, _, labels in clips:
        rms = np.sqrt((ex.samples.reshape(ROWS, -1).astype(np.float64) ** 2).mean(axis=1))
        sounding = labels.rows > 0
        assert sounding.any() and (~sounding).any()
        for ev in ex.scene.sounds:
            name = "alarm" if ev.kind == "alarm" else f"{ev.kind} {ev.detail}"
            rows = np.flatnonzero(labels.rows == SOUND_CLASSES.index(name))
            assert rows.size and rows.min() >= ev.second * 25 and rows.max() < (ev.second + 1) * 25
            assert labels.seconds[ev.second] == SOUND_CLASSES.index(name)
        # energy: a sound's rows (beep gaps and word pauses included) against the rest
        assert np.median(rms[sounding]) > 5 * np.median(rms[~sounding]), ex.scene.seed
