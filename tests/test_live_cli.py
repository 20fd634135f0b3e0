"""`vinci-edge live` as a user runs it: a file played as live with periodic questions, alerts and
--ask; every event as JSON; bad input refused in one line before anything is loaded; a missing
microphone is video only with a notice, a missing camera is an error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vinci_edge

ROOT = Path(vinci_edge.__file__).resolve().parents[1]


def live(*argv: str | Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "vinci_edge.cli", "live", *map(str, argv)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_a_file_played_as_live_with_periodic_questions_alerts_and_a_last_question(
    tiny_engine, clip, tmp_path
):
    events_file, frames = tmp_path / "events.jsonl", tmp_path / "frames"
    proc = live(
        "--engine", tiny_engine, "--source", clip, "--fast", "--fps", "2", "--chunk-seconds", "1",
        "--every", "2", "--question", "Is it safe?", "--max-new-tokens", "6",
        "--alert", "anything=.", "--events", events_file, "--frames-dir", frames,
        "--ask", "Summarise the clip.", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    questions = [e for e in events if e["type"] == "question"]
    answers = {e["qid"]: e for e in events if e["type"] == "answer"}
    assert [q["origin"] for q in questions] == ["periodic", "periodic", "cli"]
    assert set(answers) == {q["qid"] for q in questions}  # every question answered
    for qid, a in answers.items():  # the streamed pieces are the answer
        assert "".join(e["text"] for e in events if e["type"] == "text" and e["qid"] == qid) == a["text"]
    assert answers[questions[-1]["qid"]]["media_until"] == pytest.approx(4.0, abs=0.1)  # the whole clip
    logged = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert sum(e["type"] == "alert" for e in logged) == 3 and len(list(frames.glob("*.jpg"))) == 3
    assert "stopped: segments" in proc.stderr and "Traceback" not in proc.stderr


def test_the_human_output_streams_answers_with_stream_times(tiny_engine, clip):
    proc = live(
        "--engine", tiny_engine, "--source", clip, "--fast", "--ask", "What is it?", "--max-new-tokens", "4"
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith("Q1 (cli, media to 4.0 s) What is it?")
    assert "A1 " in lines[1] and "[first token" in lines[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--source", "no-such-clip.mp4"], "no-such-clip.mp4"),
        (["--source", "ftp://example/x"], "--source"),
        (["--source", "CLIP", "--fps", "0"], "--fps"),
        (["--source", "CLIP", "--alert", "bad=("], "--alert"),
        (["--source", "/dev/video9"], "/dev/video9"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_engine, clip, argv, message):
    argv = [str(clip) if a == "CLIP" else a for a in argv]
    proc = live("--engine", tiny_engine, *argv, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and message in error[0], proc.stderr


def test_vad_without_audio_is_refused(tiny_engine, tmp_path):
    from vinci_edge.media.synth import make_test_clip

    silent = make_test_clip(tmp_path / "silent.mp4", seconds=1.0, audio=False)
    proc = live("--engine", tiny_engine, "--source", silent, "--fast", "--vad", timeout=120)
    assert proc.returncode == 2 and "--vad needs audio" in proc.stderr


def test_a_missing_microphone_means_video_only_with_a_notice(tiny_engine, clip, tmp_path):
    from vinci_edge.errors import PromptError
    from vinci_edge.live.sources import MicrophoneSource

    try:
        MicrophoneSource()
    except PromptError:
        pass
    else:
        pytest.skip("this machine has a microphone")
    from vinci_edge.media.synth import make_test_clip

    silent = make_test_clip(tmp_path / "silent.mp4", seconds=2.0, audio=False)
    proc = live(
        "--engine",
        tiny_engine,
        "--source",
        silent,
        "--fast",
        "--mic",
        "--ask",
        "What?",
        "--max-new-tokens",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    assert "no microphone" in proc.stderr and "video only" in proc.stderr
