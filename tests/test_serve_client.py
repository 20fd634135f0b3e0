"""The client of `vinci-edge serve` (vinci_edge/serve/client.py) against a real server on loopback,
with the tiny engine: a clip streamed to the server gets the same greedy tokens as a local live
session; a server that is killed is reported and tried again, never a traceback, and the answers
come back once it is up again; the demos and `serve-client` run end to end with --server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed (the serve extra)")
pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed (the serve extra)")
server_module = pytest.importorskip(
    "vinci_edge.serve.server", reason="the server side (branch serve) is not merged into this branch"
)

from process_helpers import ctrl_c_as_on_a_terminal  # noqa: E402
from triton_helpers import free_port  # noqa: E402

from vinci_edge.generation import GenerationConfig  # noqa: E402
from vinci_edge.live.answers import QuestionRefused  # noqa: E402
from vinci_edge.live.session import LiveOptions, LiveSession  # noqa: E402
from vinci_edge.live.sources import FileSource, Retry  # noqa: E402
from vinci_edge.runtime.pipeline import Pipeline  # noqa: E402
from vinci_edge.serve.client import RemoteOptions, RemoteSession  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GREEDY = GenerationConfig(max_new_tokens=12, ignore_eos=True)
LIVE = {"fps": 1.0, "chunk_seconds": 2.0}
QUESTION = "What happens in the clip?"


def serve_options(**extra) -> dict:
    ports = [free_port() for _ in range(3)]
    return {
        "http_port": ports[0],
        "grpc_port": ports[1],
        "metrics_port": ports[2],
        "max_new_tokens": 12,
        "ignore_eos": True,
        **LIVE,
        **extra,
    }


@pytest.fixture(scope="module")
def server(tiny_engine) -> Iterator[str]:
    """`vinci-edge serve` in this process; its gRPC address."""
    options = server_module.ServeOptions(**serve_options(max_streams=4))
    with server_module.Server(tiny_engine, options) as running:
        yield running.grpc_url


# A server in a process of its own (its own session and process group), so a test can kill it.
SERVER_SCRIPT = """
import json, signal, sys, threading
from vinci_edge.serve.server import ServeOptions, Server
server = Server(sys.argv[1], ServeOptions(**json.loads(sys.argv[2]))).start()
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
open(sys.argv[3], "w").close()  # ready (Triton's own log goes to stdout)
stop.wait()
server.stop(30)
"""


@contextlib.contextmanager
def server_process(engine: Path, options: dict, log: Path) -> Iterator[subprocess.Popen]:
    ready = log.with_name(f"ready-{options['grpc_port']}-{time.monotonic_ns()}")
    with log.open("a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_SCRIPT, str(engine), json.dumps(options), str(ready)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # tritonserver is its child: the group is killed together
        )
        try:
            deadline = time.monotonic() + 180
            while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert ready.exists(), f"the server did not start:\n{log.read_text()[-3000:]}"
            yield proc
        finally:
            kill_group(proc)


def kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


class Events:
    """Every event a session publishes, and the exceptions that escaped any thread meanwhile."""

    def __init__(self) -> None:
        self.items: list[dict] = []
        self.escaped: list[BaseException] = []
        self._hook = threading.excepthook

    def __call__(self, event: dict) -> None:
        self.items.append(event)

    def __enter__(self) -> Events:
        threading.excepthook = lambda args: self.escaped.append(args.exc_value)
        return self

    def __exit__(self, *exc) -> None:
        threading.excepthook = self._hook

    def of(self, type_: str, **match) -> list[dict]:
        """The events of a type whose fields match (e.g. of("source", kind="lost"))."""
        return [e for e in self.items if e["type"] == type_ and all(e.get(k) == v for k, v in match.items())]

    def wait(self, type_: str, timeout: float, after: int = 0, **match) -> dict:
        """The first matching event published after the first `after` events."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.items[after:] if e in self.of(type_, **match)]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no {type_} event {match} in {timeout} s: {self.items[-20:]}")


# ---- the same answer as a local session ------------------------------------------------------------
def test_a_clip_streamed_to_the_server_gets_the_local_sessions_tokens(server, tiny_engine, clip):
    local = LiveSession(Pipeline.from_engine(tiny_engine), LiveOptions(**LIVE, max_new_tokens=12))
    with local:
        local.start([FileSource(clip, realtime=False)])
        assert local.join(timeout=120)
        expected = local.ask(QUESTION, gen=GREEDY, timeout=60)

    with Events() as events, RemoteSession(server, "parity") as remote:
        remote.subscribe(events)
        remote.start([FileSource(clip, realtime=False)])
        assert remote.join(timeout=120), remote.stats()
        answer = remote.ask(QUESTION, gen=GREEDY, timeout=60)
        stats = remote.stats()
    assert answer.token_ids == expected.token_ids and len(answer.token_ids) == 12
    assert answer.text == expected.text
    assert "".join(e["text"] for e in events.of("text", qid=answer.qid)) == answer.text
    server_side = stats["server"]
    assert server_side["segments"] == local.stats()["segments"]
    assert server_side["frames_encoded"] == local.stats()["frames_encoded"]
    assert stats["frames_dropped"] == 0 and server_side["frames_dropped"] == 0
    assert not events.escaped and not events.of("error")


def test_questions_are_answered_or_refused_with_a_reason(server, clip):
    with Events() as events, RemoteSession(server, "refusals", RemoteOptions(max_queued_questions=1)) as s:
        s.subscribe(events)
        s.start([FileSource(clip, realtime=False)])
        empty = s.submit("   ")
        first, second = s.submit(QUESTION), s.submit(QUESTION)  # the second waits beyond the limit
        with pytest.raises(QuestionRefused, match="empty"):
            empty.result(5)
        with pytest.raises(QuestionRefused, match="max_queued_questions"):
            second.result(5)
        assert first.result(60).text is not None
    other = RemoteSession(server, "never-started")
    with pytest.raises(QuestionRefused, match="not running"):
        other.ask(QUESTION, timeout=5)
    assert len(events.of("refused")) == 2 and not events.escaped


# ---- a server that goes away ---------------------------------------------------------------------------
def test_a_killed_server_is_reported_and_retried_then_answers_again(tiny_engine, clip, tmp_path):
    options = serve_options(max_streams=2)
    url = f"127.0.0.1:{options['grpc_port']}"
    log = tmp_path / "server.log"
    retry = RemoteOptions(retry=Retry(0.2, 1.0))
    with Events() as events:
        session = RemoteSession(url, "dock-7", retry)
        session.subscribe(events)
        with server_process(tiny_engine, options, log) as first:
            session.start([FileSource(clip, realtime=True, loop=True)])
            events.wait("segment", 30)
            assert session.ask(QUESTION, timeout=60).token_ids
            kill_group(first)  # SIGKILL: no `end`, no goodbye
            lost = events.wait("source", 30, kind="lost")
            assert lost["source"] == f"server {url}" and url in lost["message"]
            with pytest.raises(QuestionRefused, match="unavailable"):
                session.ask(QUESTION, timeout=30)  # asked while the server is away: refused, with why
            time.sleep(2.0)  # a few retries fail meanwhile: one "lost", no more
            assert len(events.of("source", kind="lost")) == 1
        with server_process(tiny_engine, options, log):
            events.wait("source", 60, kind="reconnected")
            events.wait("segment", 30, after=len(events.items))  # started again: media flows in
            answer = session.ask(QUESTION, timeout=60)
            assert answer.token_ids
            session.stop()
    assert session.stats()["reconnects"] == 1
    assert not events.escaped, events.escaped


def test_a_server_that_is_not_there_yet_is_waited_for(tiny_engine, clip, tmp_path):
    options = serve_options()
    url = f"127.0.0.1:{options['grpc_port']}"
    with Events() as events:
        session = RemoteSession(url, "early", RemoteOptions(retry=Retry(0.2, 1.0)))
        session.subscribe(events)
        session.start([FileSource(clip, realtime=False)])  # nothing listens yet: no exception
        assert events.wait("source", 10, kind="lost")["source"] == f"server {url}"
        with server_process(tiny_engine, options, tmp_path / "server.log"):
            events.wait("source", 60, kind="reconnected")
            assert session.join(timeout=60)
            assert session.ask(QUESTION, timeout=60).token_ids
            session.stop()
    assert session.stats()["frames_dropped"] == 0  # a file waits for the server: nothing lost
    assert not events.escaped


# ---- the commands -------------------------------------------------------------------------------------
def run_command(*args: object, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_the_factory_demo_runs_against_the_server(server, clip, tmp_path):
    events, frames = tmp_path / "events.jsonl", tmp_path / "frames"
    done = run_command(
        ROOT / "demos" / "factory_monitor.py", "--server", server, "--camera", "line-3", "--source", clip,
        "--fast", "--every", 2, "--max-new-tokens", 8, "--alert", r"word=\w", "--events", events,
        "--frames-dir", frames,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    summary = json_lines(done.stdout)[-1]
    assert summary["type"] == "summary"
    assert summary["questions"] + summary["skipped"] == 2 and summary["questions"] >= 1  # a 4 s clip
    assert summary["answers"] == summary["questions"] and summary["frames_dropped"] == 0
    logged = json_lines(events.read_text())
    answers = [e for e in logged if e["type"] == "answer"]
    assert len(answers) == summary["answers"] and all(a["origin"] == "periodic" for a in answers)
    alerts = [e for e in logged if e["type"] == "alert"]
    assert len(list(frames.iterdir())) == len(alerts)  # the frame each alerting answer named, saved here


def test_the_robot_demo_runs_against_the_server(server, tmp_path):
    from test_demos import FRONT_CENTER, SAMPLE_RATE, make_speech_clip

    from vinci_edge.media.decode import decode_audio

    if not FRONT_CENTER.is_file():
        pytest.skip(f"{FRONT_CENTER} is not installed (Debian package alsa-utils)")
    words = decode_audio(FRONT_CENTER, SAMPLE_RATE).samples
    speech = make_speech_clip(tmp_path / "speech.mp4", words, seconds=6.0, speech_at=2.0)
    done = run_command(
        ROOT / "demos" / "robot_voice_command.py", "--server", server, "--source", speech, "--fast",
        "--max-new-tokens", 12,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (command,) = json_lines(done.stdout)  # the VAD runs on the client: one command for "front, center"
    assert 1.9 <= command["t0"] < command["t1"] <= 3.7 and command["qid"] == 1
    assert command["valid"] in (True, False) and "refused" not in command, command
    assert "1 speech segments" in done.stderr


# `vinci-edge` with serve-client registered, whether or not vinci_edge/cli.py lists it yet
VINCI_EDGE = """
import argparse, sys
from vinci_edge import cli
from vinci_edge.serve import client_cli
build = cli.build_parser
def parser():
    p = build()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    if "serve-client" not in sub.choices:
        client_cli.register(sub)
    return p
cli.build_parser = parser
sys.exit(cli.run(sys.argv[1:]))
"""


def test_serve_client_streams_and_prints_the_answers(server, clip):
    done = run_command(
        "-c", VINCI_EDGE, "serve-client", "--server", server, "--camera", "cli", "--source", clip, "--fast",
        "--ask", "What happens?", "--max-new-tokens", 6, "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = json_lines(done.stdout)
    (answer,) = [e for e in events if e["type"] == "answer"]
    assert (
        answer["question"] == "What happens?" and answer["origin"] == "cli" and len(answer["token_ids"]) == 6
    )
    assert "stopped: frames sent" in done.stderr and "Traceback" not in done.stderr


def test_serve_client_without_a_server_retries_quietly(clip):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", VINCI_EDGE, "serve-client", "--server", f"127.0.0.1:{port}", "--camera", "x",
         "--source", str(clip)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=ctrl_c_as_on_a_terminal,
    )  # fmt: skip
    time.sleep(6.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert err.count(f"server 127.0.0.1:{port}: lost:") == 1, err  # said once, tried again quietly
    assert proc.returncode == 130 and "interrupted" in err
