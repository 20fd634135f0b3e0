"""The row probe reads the shipped checkpoint's media rows: colour is in every video row that shows
a shape, and the sound in the audio rows that hear one (what the task's answers rest on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vinci_edge.avtask.speech import espeak_available

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "avtask"


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_the_shipped_rows_say_colour_and_sound(tmp_path):
    from vinci_edge.training.row_probe import main, row_probe

    result = row_probe(CHECKPOINT, fit_clips=12, score_clips=4)
    assert result["video_colour"]["rows_with_content"] > 0.9, result
    assert result["audio_sound"]["rows_with_content"] > 0.6, result
    assert result["video_shape"]["rows_with_content_n"] > 20  # the scored clips show shapes
    assert main(["--checkpoint", str(tmp_path)]) == 2  # not a checkpoint: one line, exit 2
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    assert main(["--checkpoint", str(CHECKPOINT), "--out", str(a_file)]) == 2  # refused before the work
    assert a_file.read_text() == "mine"
