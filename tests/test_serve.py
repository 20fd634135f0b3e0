"""`vinci-edge serve` on a real Triton Inference Server (PyTriton) on loopback, with the tiny engine.

Two cameras streamed at once answer token for token what a local live session answers for the
same clip; a silent camera is expired and freed; a stream past --max-streams is refused while the
first goes on; a corrupt frame is refused with the reason and changes nothing in another camera's
answer; health, readiness and Prometheus metrics answer; SIGTERM with a question queued answers it.
The test client is tritonclient itself: frames and audio from a FileSource, sent as they come.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="serving needs nvidia-pytriton (the [serve] extra)")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="serving needs tritonclient (the [serve] extra)")
from tritonclient.utils import InferenceServerException, np_to_triton_dtype  # noqa: E402

from vinci_edge import cli_options as opt  # noqa: E402
from vinci_edge.generation import GenerationConfig  # noqa: E402
from vinci_edge.live.packets import StreamClock  # noqa: E402
from vinci_edge.live.segments import FrameSampler  # noqa: E402
from vinci_edge.live.session import LiveOptions, LiveSession, QuestionRefused  # noqa: E402
from vinci_edge.live.sources import FileSource  # noqa: E402
from vinci_edge.runtime.pipeline import Pipeline  # noqa: E402
from vinci_edge.serve.cli import register  # noqa: E402
from vinci_edge.serve.server import ServeError, ServeOptions, Server  # noqa: E402
from vinci_edge.serve.streams import STOPPING, Streams  # noqa: E402
from vinci_edge.serve.triton_stages import TritonStage  # noqa: E402

# PyTriton 0.7's Python-backend stub reads numpy 1's array layout (see vinci_edge/serve/server.py):
# Triton is started only where numpy < 2; elsewhere the server must refuse to start.
NUMPY_2 = int(np.__version__.split(".")[0]) >= 2
needs_numpy_1 = pytest.mark.skipif(NUMPY_2, reason=f"PyTriton 0.7 needs numpy < 2, not {np.__version__}")

FPS, CHUNK, MAX_NEW = 1.0, 2.0, 8
QUESTION = "What happens in the clip?"
EXPIRE = 3.0
UNTIL_THE_END = 1e6  # a question answered once the camera's stream has been taken in to its end
REPO = Path(__file__).resolve().parents[1]


# ---- a test client: one camera over gRPC ----------------------------------------------------------
def _text(name: str, value: str):
    x = grpcclient.InferInput(name, [1], "BYTES")
    x.set_data_from_numpy(np.array([value.encode()], dtype=np.object_))
    return x


def _array(name: str, value: np.ndarray):
    x = grpcclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
    x.set_data_from_numpy(value)
    return x


class Camera:
    """One camera's client: `media` requests, and questions over gRPC streams."""

    def __init__(self, url: str, camera: str) -> None:
        self.url, self.camera = url, camera
        self.client = grpcclient.InferenceServerClient(url)
        self.streams: list[Any] = []

    def media(self, kind: str, t: float = 0.0, **arrays: np.ndarray) -> dict[str, Any]:
        inputs = [_text("camera", self.camera), _text("kind", kind), _array("t", np.array([t], np.float64))]
        inputs += [_array(name, value) for name, value in arrays.items()]
        return json.loads(self.client.infer("media", inputs).as_numpy("status")[0])

    def ask(self, question: str, until: float | None = None) -> Future:
        """A future of (the streamed text, the final JSON)."""
        client = grpcclient.InferenceServerClient(self.url)
        self.streams.append(client)
        done: Future = Future()
        pieces: list[str] = []

        def on_response(result, error) -> None:
            if error is not None:
                if not done.done():
                    done.set_exception(error)
                return
            final = result.as_numpy("final")
            if final is None:  # the empty response that only closes the stream
                return
            pieces.append(result.as_numpy("text")[0].decode())
            if final[0]:
                done.set_result(("".join(pieces), json.loads(final[0])))

        client.start_stream(callback=on_response)
        inputs = [_text("camera", self.camera), _text("question", question)]
        if until is not None:
            inputs.append(_array("until", np.array([until], np.float64)))
        client.async_stream_infer("ask", inputs, enable_empty_final_response=True)
        return done

    def stats(self) -> dict[str, Any]:
        return json.loads(self.client.infer("stats", [_text("what", "all")]).as_numpy("stats")[0])

    def wait_queued(self, timeout: float = 10.0) -> None:
        """Until the camera's session holds a question (a stream request races the media ones)."""
        deadline = time.monotonic() + timeout
        while self.stats()["streams"][self.camera]["queued_questions"] < 1:
            assert time.monotonic() < deadline, "the question never reached the session"
            time.sleep(0.02)

    def close(self) -> None:
        for client in self.streams:
            client.stop_stream()
            client.close()
        self.client.close()


class Forward:
    """A live-source sink that sends what a FileSource delivers to the server, frames sampled at
    the server's fps (the first of each slot, as the server would take them)."""

    def __init__(self, camera: Camera) -> None:
        self.camera = camera
        self.sampler = FrameSampler(FPS)
        self.statuses: list[dict[str, Any]] = []

    def want_frame(self, t: float) -> bool:
        return self.sampler.wants(t)

    def frame(self, t: float, rgb: np.ndarray) -> None:
        self.sampler.take(t)
        self.statuses.append(self.camera.media("frame", t, frame=rgb))

    def audio(self, t: float, samples: np.ndarray) -> None:
        self.statuses.append(self.camera.media("audio", t, samples=samples))

    def notice(self, source: str, kind: str, message: str) -> None:
        pass


def send_clip(camera: Camera, clip: Path) -> None:
    """Every frame and audio block of `clip` at the times a file played as live gives them."""
    sink = Forward(camera)
    FileSource(clip, realtime=False).run(StreamClock(), sink, threading.Event())
    assert sink.statuses and all(s["ok"] for s in sink.statuses), sink.statuses[:3]


def stream_and_ask(url: str, camera: str, clip: Path) -> tuple[str, dict[str, Any]]:
    """start, the clip, a question answered once it is all in, end; the answer."""
    cam = Camera(url, camera)
    try:
        assert cam.media("start")["ok"]
        send_clip(cam, clip)
        answer = cam.ask(QUESTION, until=UNTIL_THE_END)
        cam.wait_queued()
        assert cam.media("end")["ok"]
        return answer.result(timeout=60)
    finally:
        cam.close()


# ---- fixtures -----------------------------------------------------------------------------------
def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def clip2(tmp_path_factory) -> Path:
    from vinci_edge.media.synth import make_test_clip

    return make_test_clip(tmp_path_factory.mktemp("media") / "clip880.mp4", seconds=4.0, tone_hz=880)


@pytest.fixture(scope="module")
def local(tiny_engine, clip, clip2) -> dict[Path, Any]:
    """What a local live session answers for each clip played to its end (greedy, fixed length)."""
    answers = {}
    for path in (clip, clip2):
        options = LiveOptions(fps=FPS, chunk_seconds=CHUNK, max_new_tokens=MAX_NEW)
        with LiveSession(Pipeline.from_engine(tiny_engine), options) as session:
            session.start([FileSource(path, realtime=False)])
            assert session.join(timeout=60)
            gen = GenerationConfig(max_new_tokens=MAX_NEW, ignore_eos=True)
            answers[path] = session.ask(QUESTION, gen=gen, timeout=60)
    return answers


@pytest.fixture(scope="module")
def server(tiny_engine, tmp_path_factory):
    http, grpc, metrics = free_ports(3)
    options = ServeOptions(
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        max_streams=3,
        expire_seconds=EXPIRE,
        fps=FPS,
        chunk_seconds=CHUNK,
        max_new_tokens=MAX_NEW,
        late_seconds=60.0,  # segments close when every stream has passed them, however loaded the machine
        ignore_eos=True,
        triton_log=str(tmp_path_factory.mktemp("triton") / "triton.log"),
    )
    with Server(tiny_engine, options) as running:
        yield running


# ---- the server ---------------------------------------------------------------------------------
@needs_numpy_1
def test_two_cameras_at_once_answer_as_local_sessions(server, clip, clip2, local):
    with ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(stream_and_ask, server.grpc_url, name, path)
            for name, path in [("a", clip), ("b", clip2)]
        ]
        answers = [run.result(timeout=120) for run in runs]
    for (text, final), path in zip(answers, (clip, clip2)):
        assert "refused" not in final, final
        assert final["token_ids"] == local[path].token_ids
        assert len(final["token_ids"]) == MAX_NEW and text == final["text"] == local[path].text
        assert final["question"] == QUESTION and final["media_until"] >= 3.5
    # both cameras' frames went through the one served vision model
    batches = server.stats()["batches"]
    assert batches["vision"]["items"] >= 8 and batches["audio"]["items"] >= 4


@needs_numpy_1
def test_a_corrupt_frame_is_refused_and_the_other_camera_is_unaffected(server, clip, local):
    pool = ThreadPoolExecutor(1)
    good = pool.submit(stream_and_ask, server.grpc_url, "good", clip)
    bad = Camera(server.grpc_url, "bad")
    try:
        assert bad.media("start")["ok"]
        status = bad.media("frame", 0.0, frame=np.zeros((48, 64, 4), np.uint8))
        assert not status["ok"] and "(48, 64, 4), not (height, width, 3) RGB" in status["reason"]
        status = bad.media("frame", 0.0, frame=np.zeros((2, 9000, 3), np.uint8))
        assert not status["ok"] and "each side must be 1 to 8192" in status["reason"]
        status = bad.media("audio", 0.0, samples=np.array([0.0, np.nan], np.float32))
        assert not status["ok"] and "NaN" in status["reason"]
        for frame in (np.zeros((48, 64, 3), np.float32), np.zeros((48, 64, 3, 1), np.uint8)):
            with pytest.raises(InferenceServerException, match="input 'frame'"):  # Triton refuses these
                bad.media("frame", 0.0, frame=frame)
        assert bad.media("frame", 0.5, frame=np.zeros((48, 64, 3), np.uint8))["ok"]  # it goes on
        assert bad.stats()["streams"]["bad"]["media_refused"] == 3
        assert bad.media("end")["ok"]
    finally:
        bad.close()
        pool.shutdown(wait=False)
    _, final = good.result(timeout=120)
    assert final["token_ids"] == local[clip].token_ids


@needs_numpy_1
def test_a_silent_camera_is_expired_and_freed(server):
    cam = Camera(server.grpc_url, "gone")
    try:
        assert cam.media("start")["ok"]
        assert cam.media("frame", 0.0, frame=np.zeros((32, 32, 3), np.uint8))["ok"]
        assert "gone" in cam.stats()["streams"]
        deadline = time.monotonic() + EXPIRE + 5
        while "gone" in cam.stats()["streams"] and time.monotonic() < deadline:
            time.sleep(0.2)
        stats = cam.stats()
        assert "gone" not in stats["streams"] and stats["expired"] >= 1
        status = cam.media("frame", 1.0, frame=np.zeros((32, 32, 3), np.uint8))
        assert not status["ok"] and "--expire-seconds" in status["reason"]
        deadline = time.monotonic() + 10
        while server.stats()["closing"] and time.monotonic() < deadline:  # its session is closed too
            time.sleep(0.1)
        assert server.stats()["closing"] == 0
    finally:
        cam.close()


@needs_numpy_1
def test_health_readiness_and_metrics_answer(server):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/media/ready"):
        with urllib.request.urlopen(server.http_url + path, timeout=5) as reply:
            assert reply.status == 200
    with urllib.request.urlopen(server.metrics_url, timeout=5) as reply:
        metrics = reply.read().decode()
    assert "# TYPE nv_inference_request_success counter" in metrics
    assert 'nv_inference_request_success{model="vision"' in metrics


# ---- the command: --max-streams 1, SIGTERM with a question queued ---------------------------------
RUN_SERVE = """
import sys
from vinci_edge import cli_options as opt
from vinci_edge.serve.cli import register
parser = opt.CommandLineParser(prog="vinci-edge")
register(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


@needs_numpy_1
def test_serve_command_admits_one_stream_and_answers_a_queued_question_at_ctrl_c(
    tiny_engine, clip, local, tmp_path
):
    http, grpc, metrics = free_ports(3)
    argv = ["serve", "--engine", str(tiny_engine), "--max-streams", "1", "--max-new-tokens", str(MAX_NEW)]
    argv += ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    argv += ["--triton-log", str(tmp_path / "triton.log")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_SERVE, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # a process group of its own, as a terminal gives a command
    )
    try:
        urls = {}
        while "metrics" not in urls:  # the URLs, once every model is ready
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            urls[line.split()[0]] = line.split()[1:]
        assert urls["gRPC"] == [f"127.0.0.1:{grpc}"] and urls["metrics"] == [
            f"http://127.0.0.1:{metrics}/metrics"
        ]
        first, second = Camera(f"127.0.0.1:{grpc}", "first"), Camera(f"127.0.0.1:{grpc}", "second")
        assert first.media("start")["ok"]
        refused = second.media("start")
        assert not refused["ok"] and "1 of 1 streams are open (--max-streams)" in refused["reason"]
        send_clip(first, clip)  # the first goes on; its stream never ends before the server does
        pending = first.ask(QUESTION, until=UNTIL_THE_END)
        first.wait_queued()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: Triton gets it too and starts refusing requests
        _, final = pending.result(timeout=60)  # answered, about the whole clip: nothing lost
        assert "refused" not in final, final
        ids = final["token_ids"]  # without --ignore-eos it may end early: the same tokens up to there
        assert ids == local[clip].token_ids[: len(ids)]
        first.close()
        second.close()
        assert proc.wait(timeout=60) == 0
        err = proc.stderr.read()
        assert (
            "[vinci-edge] serve: stopped: admitted 1, streams refused 1, ended 0, expired 0, stopped 1" in err
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # Triton with it
            proc.wait()


def test_the_server_refuses_to_start_with_numpy_2(tiny_engine, monkeypatch):
    monkeypatch.setattr(np, "__version__", "2.4.6")
    with pytest.raises(ServeError, match="PyTriton 0.7 cannot serve with numpy 2.4.6") as refused:
        Server(tiny_engine, ServeOptions())  # refused before the engine is loaded
    assert "numpy<2" in refused.value.hint


# ---- options and the stream registry, without Triton -------------------------------------------------
def parse(*argv: str):
    parser = opt.CommandLineParser(prog="vinci-edge")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["serve", "--engine", "e", *argv])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max-streams", "0"], "argument --max-streams: 0 is not an integer in [1, 1024]"),
        (["--http-port", "70000"], "argument --http-port: 70000 is not an integer in [1, 65535]"),
        (["--expire-seconds", "0"], "argument --expire-seconds: 0 is not a number > 0"),
        (["--fps", "nan"], "argument --fps: nan is not a number > 0"),
        (
            ["--host", "no such host"],
            "argument --host: 'no such host' is neither an IP address nor a host name",
        ),
        (["--max-new-tokens", "0"], "argument --max-new-tokens: 0 is not an integer >= 1"),
    ],
)
def test_bad_options_are_refused_at_parse(argv, message):
    with pytest.raises(opt.UsageError) as refused:
        parse(*argv)
    assert refused.value.message == message


def test_equal_ports_are_refused_before_the_engine_loads():
    args = parse("--http-port", "9000", "--metrics-port", "9000")
    with pytest.raises(opt.UsageError, match="argument --metrics-port: 9000 is also --http-port"):
        args.func(args)  # the engine folder "e" does not exist: refused before it is looked at


def test_every_option_says_its_default():
    parser = opt.CommandLineParser(prog="vinci-edge")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    for action in sub.choices["serve"]._actions:
        if action.option_strings and action.dest not in ("help", "engine"):
            assert "default" in (action.help or ""), action.dest


class FakeSession:
    """What the registry needs of a live session."""

    def __init__(self) -> None:
        self.started = self.stopped = False
        self.questions: list[Future] = []

    def start(self, sources) -> None:
        self.started = True

    def join(self, timeout=None) -> bool:
        return True

    def stop(self) -> None:
        self.stopped = True
        for q in self.questions:
            q.set_exception(QuestionRefused("the session stopped"))

    def submit(self, question, **kwargs) -> Future:
        self.questions.append(Future())
        return self.questions[-1]

    def stats(self) -> dict[str, Any]:
        return {}


def test_the_registry_admits_expires_and_refuses_while_stopping():
    now = [0.0]
    sessions: list[FakeSession] = []

    def open_session(camera: str) -> FakeSession:
        sessions.append(FakeSession())
        return sessions[-1]

    streams = Streams(open_session, 2, 5.0, audio=True, sample_rate=16000, clock=lambda: now[0])
    assert streams.media("a", "start", 0.0)["ok"] and streams.media("b", "start", 0.0)["ok"]
    assert "already streaming" in streams.media("a", "start", 0.0)["reason"]
    assert "2 of 2 streams" in streams.media("c", "start", 0.0)["reason"]
    assert (
        "send start first" in streams.media("c", "frame", 0.0, frame=np.zeros((2, 2, 3), np.uint8))["reason"]
    )
    assert "unknown kind" in streams.media("a", "jump", 0.0)["reason"]
    now[0] = 4.0
    assert streams.media("a", "frame", 4.0, frame=np.zeros((2, 2, 3), np.uint8))["ok"]  # a is heard from
    now[0] = 6.0
    assert streams.expire() == ["b"] and set(streams.stats()["streams"]) == {"a"}
    assert streams.media("c", "start", 0.0)["ok"]  # b's place is free again
    queued = streams.ask("a", "?", GenerationConfig())
    streams.stop(timeout=10)
    assert all(s.stopped for s in sessions) and queued.done()  # refused with the reason, not lost
    with pytest.raises(QuestionRefused, match=STOPPING):
        streams.ask("a", "?", GenerationConfig())
    assert streams.media("d", "start", 0.0) == {"ok": False, "reason": STOPPING}


def test_a_decoder_sibling_shares_the_session_and_keeps_its_own_cache(tiny_engine):
    pipe = Pipeline.from_engine(tiny_engine)
    decoder = pipe.decoder
    x = pipe.text_table[[1, 2, 3, 4]].astype(np.float32)
    expected = decoder.prefill(x).copy()
    twin = decoder.sibling()
    assert twin.session is decoder.session and twin.length == 0 and twin.kv[0] is not decoder.kv[0]
    np.testing.assert_array_equal(twin.append(x[:2]).copy(), decoder.prefill(x[:2]))
    np.testing.assert_array_equal(twin.append(x[2:]), expected)  # its cache was not overwritten
    fork = pipe.fork(pipe.stages)
    assert fork.engine is pipe.engine and fork.tokenizer is pipe.tokenizer and fork.cache is not pipe.cache


def test_a_served_stage_runs_the_engine_graph_when_triton_refuses():
    class Local:
        def run(self, inputs, outputs):
            return {"tokens": inputs["pixel_values"][:, :1] * 2}

    unreachable = free_ports(1)[0]
    stage = TritonStage("vision", f"127.0.0.1:{unreachable}", "pixel_values", "tokens", 16, local=Local())
    x = np.ones((2, 3, 4, 4), np.float32)
    np.testing.assert_array_equal(stage.run({"pixel_values": x}, ["tokens"])["tokens"], x[:, :1] * 2)
    assert stage.local_runs == 1
    alone = TritonStage("vision", f"127.0.0.1:{unreachable}", "pixel_values", "tokens", 16)
    with pytest.raises(InferenceServerException):  # without a local graph, the refusal is the error
        alone.run({"pixel_values": x})
    stage.close()
