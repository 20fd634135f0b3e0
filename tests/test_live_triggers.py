"""Live triggers: the Silero voice-activity detector, alert rules and the alert log, periodic and
speech triggers on a live session.

The VAD is checked on real speech (Debian's alsa-utils "Front Center" recording) against the
silero-vad package's own torch code (imported here only: the runtime never imports torch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vinci_edge.live.vad import (
    SAMPLE_RATE,
    WINDOW,
    SileroVAD,
    SpeechDetector,
    SpeechSegment,
    silero_model_path,
)
from vinci_edge.media.decode import decode_audio
from vinci_edge.media.synth import make_test_wav

FRONT_CENTER = Path("/usr/share/sounds/alsa/Front_Center.wav")  # "Front, center", alsa-utils


# ---- voice activity ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """One second of digital silence, the two spoken words, one second of silence: 16 kHz mono."""
    if not FRONT_CENTER.is_file():
        pytest.skip(f"{FRONT_CENTER} is not installed (Debian package alsa-utils)")
    words = decode_audio(FRONT_CENTER, SAMPLE_RATE).samples
    silence = np.zeros(SAMPLE_RATE, np.float32)
    return np.concatenate([silence, words, silence])


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD()


def detect(vad: SileroVAD, audio: np.ndarray, block: int, t0: float = 0.0) -> list[SpeechSegment]:
    """Feed `audio` in blocks of `block` samples stamped as a source would (ms grid), then finish."""
    detector = SpeechDetector(vad)
    segments = []
    for i in range(0, len(audio), block):
        segments += detector.feed(round(t0 + i / SAMPLE_RATE, 3), audio[i : i + block])
    return segments + detector.finish()


def loud_span(audio: np.ndarray) -> tuple[float, float]:
    """From the first to the last 32 ms window whose RMS is above 1% of full scale."""
    n = len(audio) // WINDOW
    rms = np.sqrt((audio[: n * WINDOW].reshape(n, WINDOW) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > 0.01)
    return loud[0] * WINDOW / SAMPLE_RATE, (loud[-1] + 1) * WINDOW / SAMPLE_RATE


def test_speech_is_found_where_the_audio_has_energy(vad, speech):
    segments = detect(vad, speech, block=1000)
    first, last = loud_span(speech)
    assert 1 <= len(segments) <= 2  # "front" and "center", with a short pause between them
    assert all(s.t1 > s.t0 for s in segments)
    assert first - 0.1 <= segments[0].t0 and segments[-1].t1 <= last + 0.1
    assert sum(s.seconds for s in segments) > 0.5 * (last - first)


def test_no_speech_in_silence_or_a_tone(vad, tmp_path):
    silence = np.zeros(3 * SAMPLE_RATE, np.float32)
    tone = decode_audio(make_test_wav(tmp_path / "tone.wav", seconds=3.0), SAMPLE_RATE).samples
    assert detect(vad, silence, block=1600) == []
    assert detect(vad, tone, block=1600) == []


def test_block_size_does_not_change_the_segments(vad, speech):
    small = detect(vad, speech, block=160, t0=5.0)
    large = detect(vad, speech, block=4000, t0=5.0)
    assert small == large and small


def test_segments_are_on_the_stream_clock(vad, speech):
    """The same audio stamped 7 s later gives the same segments 7 s later."""
    at0 = detect(vad, speech, block=800)
    at7 = detect(vad, speech, block=800, t0=7.0)
    assert [(round(s.t0 + 7, 3), round(s.t1 + 7, 3)) for s in at0] == [(s.t0, s.t1) for s in at7]


def test_a_gap_in_the_stream_moves_only_the_times_after_it(vad, speech):
    """A dropped block: the blocks after it are stamped later than their sample count says."""
    detector = SpeechDetector(vad)
    block, gap = 800, 3.0
    segments = []
    for i in range(0, len(speech), block):
        t = i / SAMPLE_RATE + (gap if i >= len(speech) // 2 else 0.0)
        segments += detector.feed(round(t, 3), speech[i : i + block])
    segments += detector.finish()
    reference = detect(vad, speech, block=block)
    assert segments[0] == reference[0]  # "front" ends before the gap
    assert segments[-1].t1 == pytest.approx(reference[-1].t1 + gap, abs=1e-3)


def test_speech_running_to_the_end_is_closed_by_finish(vad, speech):
    """A file that ends mid-word still reports its last segment (ending at the last sample)."""
    cut = speech[: len(speech) - SAMPLE_RATE - 3200]
    segments = detect(vad, cut, block=1000)
    assert segments and segments[-1].t1 == pytest.approx(len(cut) / SAMPLE_RATE, abs=1e-3)


def test_probabilities_equal_the_packages_onnx_wrapper(vad, speech):
    """Window by window, the numpy reimplementation computes what silero-vad's OnnxWrapper does."""
    torch = pytest.importorskip("torch")
    from silero_vad.utils_vad import OnnxWrapper

    wrapper = OnnxWrapper(str(silero_model_path()), force_onnx_cpu=True)
    ours = vad.probabilities(speech)
    theirs = wrapper.audio_forward(torch.from_numpy(speech), SAMPLE_RATE).numpy().reshape(-1)
    assert ours.shape == theirs.shape == (-(-len(speech) // WINDOW),)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    assert ours.max() > 0.9 and ours[:20].max() < 0.1  # speech in the middle, silence first


def test_segments_equal_the_packages_vad_iterator(vad, speech):
    """The streaming segments are VADIterator's starts and ends, converted to stream seconds."""
    torch = pytest.importorskip("torch")
    from silero_vad.utils_vad import OnnxWrapper, VADIterator

    iterator = VADIterator(OnnxWrapper(str(silero_model_path()), force_onnx_cpu=True))
    events = []
    for i in range(0, len(speech) - WINDOW + 1, WINDOW):
        event = iterator(torch.from_numpy(speech[i : i + WINDOW]))
        events += [event] if event else []
    bounds = [(e["start"] if "start" in e else e["end"]) / SAMPLE_RATE for e in events]
    ours = detect(vad, speech, block=1234)
    assert [t for s in ours for t in (s.t0, s.t1)] == pytest.approx(bounds, abs=1e-3)


def test_missing_silero_is_a_missing_dependency_with_a_pip_hint(monkeypatch):
    import importlib.util

    from vinci_edge.errors import MissingDependencyError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError) as err:
        SileroVAD()
    assert "silero-vad" in err.value.message and "pip install" in err.value.hint


# ---- alert rules ------------------------------------------------------------------------------------
def test_alert_rules_parse_name_and_regex():
    from vinci_edge.live.alerts import alert_rule

    danger = alert_rule(r"danger=\byes\b|unsafe|fire")
    assert (danger.name, danger.pattern) == ("danger", r"\byes\b|unsafe|fire")
    assert danger.search("YES, a person is on the line") == "YES"
    assert danger.search("Unsafe: smoke") == "Unsafe"
    assert danger.search("the eyes are closed") is None  # \b: a word, not a part of one
    keyword = alert_rule("smoke")
    assert (keyword.name, keyword.search("Some SMOKE rises")) == ("smoke", "SMOKE")
    assert alert_rule("eq=a=b").pattern == "a=b"  # only the first = separates the name


@pytest.mark.parametrize(
    "text, says",
    [
        ("bad=(unclosed", "is not a regex (missing ), unterminated subpattern at position 0)"),
        ("empty=", "the pattern is empty"),
        ("all=.*", "matches an empty answer"),
        ("two words=x", "is not a word"),
    ],
)
def test_a_bad_alert_rule_is_one_line(text, says):
    import argparse

    from vinci_edge.live.alerts import alert_rule

    with pytest.raises(argparse.ArgumentTypeError) as err:
        alert_rule(text)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_parse_rule_raises_value_error_for_library_callers():
    from vinci_edge.live.alerts import parse_rule

    assert parse_rule("fire=smoke|flame").search("FLAME") == "FLAME"
    with pytest.raises(ValueError, match=r"^alert x: '\[a-' is not a regex"):
        parse_rule("x=[a-")


def test_a_bad_alert_rule_is_a_usage_error_on_the_command_line():
    from vinci_edge.cli_options import CommandLineParser, UsageError
    from vinci_edge.live.alerts import alert_rule

    parser = CommandLineParser(prog="factory_monitor.py")
    parser.add_argument("--alert", type=alert_rule, action="append")
    assert parser.parse_args(["--alert", "fire=flame"]).alert[0].name == "fire"
    with pytest.raises(UsageError) as err:
        parser.parse_args(["--alert", "x=[a-"])
    assert str(err.value).startswith("argument --alert: alert x: '[a-' is not a regex")


# ---- the alert log ----------------------------------------------------------------------------------
class FakeSession:
    """The three calls the alert log makes, recorded (the live session's own tests run it for real)."""

    def __init__(self, frame: tuple[float, np.ndarray] | None) -> None:
        self.subscribers: list = []
        self.published: list[dict] = []
        self.frame = frame

    def subscribe(self, fn):
        self.subscribers.append(fn)
        return lambda: self.subscribers.remove(fn)

    def publish(self, event: dict) -> None:
        self.published.append(event)

    def latest_frame(self):
        return self.frame

    def answer(self, qid: int, text: str, t: float) -> None:
        event = {"type": "answer", "t": t, "qid": qid, "question": "Unsafe?", "text": text, "frame_t": 4.0}
        for fn in list(self.subscribers):
            fn(event)


def test_alert_log_writes_every_answer_and_the_alerts_with_their_frame(tmp_path):
    import json

    from PIL import Image

    from vinci_edge.live.alerts import AlertLog, AlertRule

    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, :32] = (255, 0, 0)
    session = FakeSession((4.0, rgb))
    events = tmp_path / "log" / "events.jsonl"
    events.parent.mkdir()
    events.write_text('{"type": "earlier run"}\n')
    with AlertLog(session, [AlertRule("danger", r"\byes\b|fire")], events, tmp_path / "frames") as log:
        session.answer(1, "No, all clear.", t=4.2)
        session.answer(2, "Yes: there is a fire.", t=6.3)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [line["type"] for line in lines] == ["earlier run", "answer", "answer", "alert"]  # appended
    alert = lines[-1]
    assert alert == session.published[0]
    assert alert["rule"] == "danger" and alert["match"] == "Yes" and alert["qid"] == 2 and alert["t"] == 6.3
    assert alert["frame_t"] == 4.0 and Path(alert["frame"]).name == "t000004.000-q2.jpg"
    saved = np.asarray(Image.open(alert["frame"]))
    assert saved.shape == rgb.shape and abs(int(saved[10, 5, 0]) - 255) < 8 and saved[10, 50, 0] < 8
    assert (log.answers, log.alerts, log.frames_saved) == (2, 1, 1)
    assert session.subscribers == []  # closing unsubscribes


def test_alert_log_refuses_unwritable_outputs_before_it_starts(tmp_path):
    from vinci_edge.live.alerts import AlertLog, check_outputs
    from vinci_edge.output_folder import OutputFolderError

    a_file = tmp_path / "file.txt"
    a_file.write_text("mine")
    with pytest.raises(OutputFolderError, match="is a folder"):
        check_outputs(tmp_path, None)
    with pytest.raises(OutputFolderError, match="is a file"):
        check_outputs(None, a_file)
    with pytest.raises(OutputFolderError, match="is a file"):
        check_outputs(a_file / "events.jsonl", None)
    session = FakeSession(None)
    with pytest.raises(OutputFolderError):
        AlertLog(session, [], None, a_file / "frames")
    assert session.subscribers == [] and a_file.read_text() == "mine"


def test_alert_log_without_a_frame_still_alerts(tmp_path):
    from vinci_edge.live.alerts import AlertLog, AlertRule

    session = FakeSession(None)
    with AlertLog(session, [AlertRule("fire", "fire")], None, tmp_path / "frames"):
        session.answer(3, "fire!", t=1.0)
    assert session.published[0]["frame"] is None and session.published[0]["frame_t"] == 4.0


def test_a_watched_answer_is_saved_with_its_own_frame_not_the_newest(tmp_path):
    """The session publishes an answer, then resolves its future (which carries the question id)
    with the frame the model saw; the newest sampled frame may be far ahead (a file played fast)."""
    import threading
    from concurrent.futures import Future
    from types import SimpleNamespace

    from vinci_edge.live.alerts import AlertLog, AlertRule

    def rgb(value: int) -> np.ndarray:
        return np.full((16, 16, 3), value, np.uint8)

    def future(qid: int) -> Future:
        f: Future = Future()
        f.qid = qid  # as LiveSession.submit sets it
        return f

    session = FakeSession((9.0, rgb(250)))  # the newest frame sampled
    with AlertLog(session, [AlertRule("any", "answer")], None, tmp_path) as log:
        first, second = future(1), future(2)
        log.watch(first)
        log.watch(second)
        second.set_result(SimpleNamespace(qid=2, frame=(3.0, rgb(30))))  # resolved before its event
        session.answer(1, "answer one", t=2.0)
        threading.Timer(0.1, first.set_result, [SimpleNamespace(qid=1, frame=(1.0, rgb(10)))]).start()
        session.answer(2, "answer two", t=4.0)
        session.answer(3, "answer three, not watched", t=6.0)
    saved = {e["qid"]: e["frame_t"] for e in session.published}
    assert saved == {1: 1.0, 2: 3.0, 3: 9.0} and log.frames_saved == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "t000001.000-q1.jpg",
        "t000003.000-q2.jpg",
        "t000009.000-q3.jpg",
    ]


# ---- triggers on a recorded session -----------------------------------------------------------------
class TriggerSession(FakeSession):
    """Records the questions the triggers submit; `answered` decides whether their futures are done."""

    def __init__(self, answered: bool = True) -> None:
        super().__init__(None)
        self.answered = answered
        self.asked: list[dict] = []
        self.taps: list = []

    def submit(self, question, gen=None, until=None, on_text=None, origin="api"):
        from concurrent.futures import Future

        future: Future = Future()
        self.asked.append({"question": question, "until": until, "origin": origin})
        if self.answered:
            future.set_result(question)
        return future

    def add_audio_tap(self, fn):
        self.taps.append(fn)

    def segments(self, *ends: float) -> None:
        for t0, t1 in zip((0.0, *ends), ends):
            for fn in list(self.subscribers):
                fn({"type": "segment", "t": t1, "t0": t0, "t1": t1})


@pytest.mark.parametrize(
    "every, ends, answered, asked, skipped",
    [
        (2.0, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], True, 5, 0),  # one question per period
        (2.0, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], False, 1, 4),  # unanswered: skipped, never queued
        (2.0, [5, 10], True, 2, 3),  # a 5 s chunk passes two or three due times: asked once each time
        (0.5, [1.999, 2.0], True, 2, 2),  # due times on the ms grid: 2.0 is reached at 2.0 exactly
    ],
)
def test_periodic_trigger_asks_once_per_period_of_stream_time(every, ends, answered, asked, skipped):
    from vinci_edge.live.triggers import PeriodicTrigger

    session = TriggerSession(answered)
    trigger = PeriodicTrigger(session, every, "Unsafe?")
    session.segments(*ends)
    trigger.stop()
    assert (trigger.asked, trigger.skipped) == (asked, skipped)
    assert trigger.asked + trigger.skipped == trigger.due_times(ends[-1])
    assert all(q == {"question": "Unsafe?", "until": None, "origin": "periodic"} for q in session.asked)
    assert session.subscribers == []


def test_speech_trigger_takes_a_model_or_a_detector(vad):
    from vinci_edge.live.triggers import SpeechTrigger

    session = TriggerSession()
    trigger = SpeechTrigger(session, vad, question_for=lambda t0, t1: "?")
    assert isinstance(trigger.vad, SpeechDetector) and trigger.vad.model is vad
    trigger.stop()
    session.taps[0](0.0, np.zeros(SAMPLE_RATE, np.float32))  # stopped: the tap ignores audio
    trigger.finish()
    assert trigger.segments == [] and session.asked == []


def test_speech_trigger_asks_when_speech_ends_with_until_its_end(vad, speech):
    from vinci_edge.live.triggers import SpeechTrigger

    session = TriggerSession()
    seen = []
    trigger = SpeechTrigger(
        session,
        SpeechDetector(vad, min_silence_ms=500),
        question_for=lambda t0, t1: f"what was said from {t0} to {t1}?",
        lookback_s=0.5,
        on_asked=lambda segment, future: seen.append(segment),
    )
    (tap,) = session.taps
    for i in range(0, len(speech), 1600):
        tap(round(10 + i / SAMPLE_RATE, 3), speech[i : i + 1600])
    trigger.finish()
    (segment,) = trigger.segments  # a 500 ms pause ends speech: "front, center" is one command
    assert 11.0 <= segment.t0 < segment.t1 <= 12.6
    assert session.published == [{"type": "speech", "t": segment.t1, "t0": segment.t0, "t1": segment.t1}]
    assert session.asked == [
        {
            "question": f"what was said from {round(segment.t1 - 0.5, 3)} to {segment.t1}?",
            "until": segment.t1,
            "origin": "speech",
        }
    ]
    assert seen == [segment]  # the speech itself; the question was asked about its last 0.5 s


def test_stdin_questions_asks_each_line_and_prints_the_answers_as_they_stream():
    import io
    from concurrent.futures import Future
    from types import SimpleNamespace

    from vinci_edge.live.packets import StreamClock
    from vinci_edge.live.triggers import StdinQuestions

    class Answering(TriggerSession):
        clock = StreamClock()

        def submit(self, question, gen=None, until=None, on_text=None, origin="api"):
            future: Future = Future()
            self.asked.append({"question": question, "origin": origin})
            if question == "refuse me":
                future.set_exception(RuntimeError("the queue is full"))
                return future
            for piece in ("It ", "is ", question.upper()):
                on_text(piece)
            future.set_result(SimpleNamespace(text="It is " + question.upper()))
            return future

    session, out = Answering(), io.StringIO()
    quiet = StdinQuestions(session, stdin=io.StringIO("asked, not printed\n"))  # the live command prints
    assert quiet.join(timeout=5) and session.asked.pop()["question"] == "asked, not printed"
    asked: list = []
    lines_in = io.StringIO("door open?\n\n   \n refuse me \n")
    reader = StdinQuestions(session, stdin=lines_in, out=out, on_asked=asked.append)
    assert reader.join(timeout=5) and asked == reader.futures and len(asked) == 2
    assert session.asked == [
        {"question": "door open?", "origin": "cli"},
        {"question": "refuse me", "origin": "cli"},
    ]
    lines = out.getvalue().splitlines()
    assert (
        len(lines) == 4 and lines[0].endswith("s] door open?") and lines[1].endswith("s] > It is DOOR OPEN?")
    )
    assert lines[2].endswith("s] refuse me") and lines[3] == "  refused: the queue is full"
    assert all(line.startswith("[") for line in lines[:3])


# ---- on a live session with the tiny engine ---------------------------------------------------------
class ClipSource:
    """A clip played as fast as the session takes it: every frame and 0.1 s audio blocks, stamped
    with their media time, in time order. Test-local, so these tests exercise the triggers and the
    session, not `vinci_edge.live.sources` (tested on its own)."""

    video = audio = True
    realtime = False

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.path = path

    def run(self, clock, sink, stop) -> None:
        import av

        from vinci_edge.live.packets import ENDED

        samples = decode_audio(self.path, SAMPLE_RATE).samples
        block, sent = SAMPLE_RATE // 10, 0
        with av.open(str(self.path)) as container:
            for frame in container.decode(video=0):
                t = round(frame.time, 3)
                while sent < len(samples) and sent / SAMPLE_RATE < t:
                    sink.audio(round(sent / SAMPLE_RATE, 3), samples[sent : sent + block])
                    sent += block
                if stop.is_set():
                    break
                if sink.want_frame(t):
                    sink.frame(t, frame.to_ndarray(format="rgb24"))
        for start in range(sent, len(samples), block):
            sink.audio(round(start / SAMPLE_RATE, 3), samples[start : start + block])
        sink.notice(self.name, ENDED, "end of file")


@pytest.fixture(scope="module")
def clip8(tmp_path_factory) -> Path:
    from vinci_edge.media.synth import make_test_clip

    return make_test_clip(tmp_path_factory.mktemp("media") / "clip8.mp4", seconds=8.0)


def periodic_run(engine: Path, clip: Path, every: float, rules=(), events=None, frames=None):
    """Play `clip` fast into a session with a periodic question (and an alert log): what happened."""
    from vinci_edge.generation import GenerationConfig
    from vinci_edge.live.alerts import AlertLog
    from vinci_edge.live.session import LiveOptions, LiveSession
    from vinci_edge.live.triggers import PeriodicTrigger
    from vinci_edge.runtime.pipeline import Pipeline

    session = LiveSession(Pipeline.from_engine(engine), LiveOptions(fps=1.0, chunk_seconds=2.0))
    seen: list[dict] = []
    session.subscribe(seen.append)
    log = AlertLog(session, list(rules), events, frames)
    with log, session:
        gen = GenerationConfig(max_new_tokens=8)
        periodic = PeriodicTrigger(session, every, "What is happening?", gen, on_asked=log.watch)
        session.start([ClipSource(clip)])
        assert session.join(timeout=60)
        answers = [f.result(timeout=60) for f in periodic.futures]
        media_until = session.media_until
    return periodic, answers, seen, log, media_until


@pytest.mark.parametrize(
    "every, asked, skipped",
    [
        (2.0, 4, 0),  # due at 2, 4, 6, 8: one question per 2 s segment
        (1.5, 4, 1),  # due at 1.5, 3, 4.5, 6, 7.5: the segment ending at 6 passes two, asked once
        (3.0, 2, 0),  # due at 3, 6: the segments ending at 4 and 6
    ],
)
def test_a_file_played_fast_gets_one_periodic_question_per_period(tiny_engine, clip8, every, asked, skipped):
    periodic, answers, seen, _, media_until = periodic_run(tiny_engine, clip8, every)
    assert media_until == 8.0
    assert (periodic.asked, periodic.skipped) == (asked, skipped)
    assert periodic.asked + periodic.skipped == int(media_until / every)  # every due time, once
    assert len(answers) == asked == len([e for e in seen if e["type"] == "answer"])
    assert all(a.origin == "periodic" and a.question == "What is happening?" for a in answers)
    segment_ends = [e["t1"] for e in seen if e["type"] == "segment"]
    assert segment_ends == [2.0, 4.0, 6.0, 8.0]
    due_in = [t for t in segment_ends if int(t / every) > int((t - 2.0) / every)]
    assert [a.media_until for a in answers] == due_in  # asked as the segment with the due time came in


def test_an_alert_writes_its_json_line_and_the_frame_jpeg(tiny_engine, clip8, tmp_path):
    """Answers are greedy, so a second run answers as the first did: a rule for a word of the
    second answer fires on it (and on any other answer that holds the word)."""
    import json
    import re

    from PIL import Image

    from vinci_edge.live.alerts import AlertRule

    _, first, *_ = periodic_run(tiny_engine, clip8, 2.0)
    word = max(re.findall(r"[A-Za-z]{3,}", first[1].text), key=len)
    rule = AlertRule("word", rf"\b{word}\b")
    events, frames = tmp_path / "events.jsonl", tmp_path / "frames"
    _, answers, seen, log, _ = periodic_run(tiny_engine, clip8, 2.0, [rule], events, frames)
    assert [a.text for a in answers] == [a.text for a in first]

    lines = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()]
    answered = [line for line in lines if line["type"] == "answer"]
    alerts = [line for line in lines if line["type"] == "alert"]
    assert [line["text"] for line in answered] == [a.text for a in answers]
    expected = [a for a in answers if rule.search(a.text)]
    assert [(x["qid"], x["answer"], x["rule"]) for x in alerts] == [(a.qid, a.text, "word") for a in expected]
    assert alerts == [e for e in seen if e["type"] == "alert"]  # published, then written
    for alert, answer in zip(alerts, expected, strict=True):
        assert alert["frame_t"] == answer.frame[0]  # watched: the frame the model saw, not a newer one
        jpeg = Path(alert["frame"])
        assert jpeg.parent == frames and jpeg.name == f"t{alert['frame_t']:010.3f}-q{alert['qid']}.jpg"
        assert Image.open(jpeg).size == (160, 120)
    assert (log.answers, log.alerts) == (len(answers), len(expected)) and log.alerts >= 1
