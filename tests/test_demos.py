"""The demos (demos/*.py) run end to end as their users run them: a subprocess on a clip played as
fast as the runtime takes it, with the tiny engine (random towers, so the answers mean nothing; the
tests check the outputs' shape, not their words)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vinci_edge.media.decode import decode_audio
from vinci_edge.media.synth import pattern_frame

FRONT_CENTER = Path("/usr/share/sounds/alsa/Front_Center.wav")  # "Front, center", alsa-utils
SAMPLE_RATE = 16000
ROOT = Path(__file__).resolve().parents[1]
DEMOS = ROOT / "demos"


def make_speech_clip(path: Path, speech: np.ndarray, seconds: float, speech_at: float, fps: int = 10) -> Path:
    """An MP4 of `seconds`: the synthetic moving pattern as video, and as audio silence with
    `speech` (16 kHz mono) starting at `speech_at` s. Written with PyAV as media/synth.py does."""
    n_frames = round(seconds * fps)
    audio = np.zeros(round(seconds * SAMPLE_RATE), np.float32)
    start = round(speech_at * SAMPLE_RATE)
    audio[start : start + len(speech)] = speech[: len(audio) - start]
    with av.open(str(path), mode="w", format="mp4") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        video.time_base = Fraction(1, fps)
        sound = container.add_stream("aac", rate=SAMPLE_RATE)
        sound.layout = "mono"
        sound.time_base = Fraction(1, SAMPLE_RATE)
        written = 0
        for k in range(n_frames):
            frame = av.VideoFrame.from_ndarray(pattern_frame(k, n_frames, 160, 120), format="rgb24")
            frame.pts = k
            container.mux(video.encode(frame))
            until = len(audio) if k == n_frames - 1 else round((k + 1) * SAMPLE_RATE / fps)
            block = av.AudioFrame.from_ndarray(
                audio[None, written:until].copy(), format="fltp", layout="mono"
            )
            block.sample_rate, block.pts = SAMPLE_RATE, written
            container.mux(sound.encode(block))
            written = until
        container.mux(video.encode(None))
        container.mux(sound.encode(None))
    return path


@pytest.fixture(scope="module")
def speech_clip(tmp_path_factory) -> Path:
    """6 s: silence, "front, center" from 2 s, silence."""
    if not FRONT_CENTER.is_file():
        pytest.skip(f"{FRONT_CENTER} is not installed (Debian package alsa-utils)")
    words = decode_audio(FRONT_CENTER, SAMPLE_RATE).samples
    return make_speech_clip(
        tmp_path_factory.mktemp("media") / "speech.mp4", words, seconds=6.0, speech_at=2.0
    )


def test_the_speech_clip_holds_the_speech_where_it_was_put(speech_clip):
    from vinci_edge.live.vad import SpeechDetector

    audio = decode_audio(speech_clip, SAMPLE_RATE).samples
    detector = SpeechDetector()
    segments = detector.feed(0.0, audio) + detector.finish()
    assert segments and 1.9 <= segments[0].t0 <= 2.3 and segments[-1].t1 <= 3.7


# ---- the robot's command parsing (no engine needed) -------------------------------------------------


@pytest.fixture(scope="module")
def robot():
    import importlib
    import sys

    sys.path.insert(0, str(DEMOS))
    try:
        yield importlib.import_module("robot_voice_command")
    finally:
        sys.path.remove(str(DEMOS))


@pytest.mark.parametrize(
    "text, command",
    [
        (
            '{"action": "pick", "object": "cup", "direction": null}',
            {"action": "pick", "object": "cup", "direction": None},
        ),
        (
            'Sure! {"action": "move", "direction": "left"} done',
            {"action": "move", "object": None, "direction": "left"},
        ),
        (
            '{not json} then {"action": "stop", "object": "arm {x}"}',
            {"action": "stop", "object": "arm {x}", "direction": None},
        ),
        (
            '{"outer": 1, "action": "go", "extra": {"a": [1, 2]}}',
            {"action": "go", "object": None, "direction": None},
        ),
    ],
)
def test_a_command_is_the_first_json_object_with_an_action(robot, text, command):
    assert robot.parse_command(text) == {"valid": True, "command": command}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no json here",
        "{broken",
        '{"object": "cup"}',
        '{"action": 3}',
        '{"action": "go", "object": [1]}',
        "[1, 2]",
        "{}",
    ],
)
def test_an_unparseable_answer_is_invalid_with_its_raw_text(robot, text):
    assert robot.parse_command(text) == {"valid": False, "raw": text}


# ---- end to end, as a user runs them ----------------------------------------------------------------
def run_demo(name: str, *args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(DEMOS / name), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_factory_monitor_end_to_end(tiny_engine, clip, tmp_path):
    events, frames = tmp_path / "log" / "events.jsonl", tmp_path / "frames"
    done = run_demo(
        "factory_monitor.py", "--engine", tiny_engine, "--source", clip, "--fast", "--every", 2,
        "--max-new-tokens", 8, "--alert", r"word=\w", "--events", events, "--frames-dir", frames,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = json_lines(done.stdout)  # stdout: JSON lines only, the alerts then the summary
    summary = printed[-1]
    logged = json_lines(events.read_text(encoding="utf-8"))
    answers = [e for e in logged if e["type"] == "answer"]
    alerts = [e for e in logged if e["type"] == "alert"]
    assert summary["type"] == "summary" and summary["questions"] == 2 and summary["skipped"] == 0  # 4 s clip
    assert summary["answers"] == len(answers) == 2 and summary["frames_dropped"] == 0
    assert all(a["origin"] == "periodic" and a["question"].startswith("Is anyone in danger") for a in answers)
    assert summary["alerts"] == len(alerts) == sum(1 for a in answers if re.search(r"\w", a["text"]))
    assert printed[:-1] == alerts
    assert sorted(Path(a["frame"]).name for a in alerts) == sorted(p.name for p in frames.iterdir())
    assert [a["frame_t"] for a in alerts] == [
        a["frame_t"] for a in answers if a["qid"] in {x["qid"] for x in alerts}
    ]

    again = run_demo(
        "factory_monitor.py", "--engine", tiny_engine, "--source", clip, "--fast", "--every", 2,
        "--max-new-tokens", 8, "--events", events, "--frames-dir", frames,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert events.read_text(encoding="utf-8").startswith(
        json.dumps(logged[0], ensure_ascii=False)
    )  # appended


def test_robot_voice_command_end_to_end(tiny_engine, speech_clip):
    done = run_demo(
        "robot_voice_command.py", "--engine", tiny_engine, "--source", speech_clip, "--fast",
        "--max-new-tokens", 12,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (command,) = json_lines(done.stdout)  # "front, center": one command
    assert 1.9 <= command["t0"] < command["t1"] <= 3.7 and command["qid"] == 1
    if command["valid"]:  # random towers: almost surely not JSON, but either way it is well-formed
        assert set(command["command"]) == {"action", "object", "direction"}
    else:
        assert isinstance(command["raw"], str)
    assert "1 speech segments" in done.stderr


@pytest.mark.parametrize(
    "demo, args, says",
    [
        ("factory_monitor.py", ["--alert", "x=[a-"], "argument --alert: alert x: '[a-' is not a regex"),
        ("factory_monitor.py", ["--every", "0"], "argument --every: 0 is not a number > 0"),
        ("factory_monitor.py", ["--events", "."], "the event log . is a folder"),
        ("robot_voice_command.py", ["--threshold", "2"], "argument --threshold: 2 is not in (0, 1]"),
        ("robot_voice_command.py", ["--engine", "/no/engine"], "engine folder /no/engine does not exist"),
    ],
)
def test_a_bad_input_is_one_error_line_and_status_2(demo, args, says, tiny_engine, clip):
    done = run_demo(demo, "--engine", tiny_engine, "--source", clip, *args)
    assert done.returncode == 2 and done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if ": error: " in line or ": hint: " in line]
    assert errors[0].startswith(f"{demo}: error: {says}") and len(errors) == 2
    assert "Traceback" not in done.stderr
