"""Live sources on real media: generated clips and Debian's sample videos played through PyAV, and
network streams served and pushed by the ffmpeg command over loopback (killed and restarted to check
that the source reports the loss and reconnects). Cameras and microphones are not on this machine:
their error paths are checked."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from stream_helpers import ffmpeg, free_port, needs_ffmpeg, serve_http

from vinci_edge.errors import PromptError
from vinci_edge.live.packets import ENDED, LOST, NOTICE, RECONNECTED, StreamClock, stamp
from vinci_edge.live.sources import (
    CameraSource,
    FileSource,
    MicrophoneSource,
    Retry,
    SourceSpec,
    StreamSource,
    open_source,
    parse_source,
)
from vinci_edge.live.sources.audio import AudioBlocks, MonoResampler, frame_from_samples
from vinci_edge.live.sources.stream import protocol_available, redact
from vinci_edge.live.sources.timeline import LiveTimeline
from vinci_edge.media.decode import decode_audio
from vinci_edge.media.synth import make_test_clip, make_test_wav, read_frame_number

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


class Recorder:
    """A sink that keeps what it is given, with the stream time it was given at; `want` decides
    which frames it takes. Sources call it from their own thread: waits go through a condition."""

    def __init__(self, want: Callable[[float], bool] = lambda t: True, clock: StreamClock | None = None):
        self.want = want
        self.clock = clock
        self.frames: list[tuple[float, np.ndarray]] = []
        self.blocks: list[tuple[float, np.ndarray]] = []
        self.notices: list[tuple[str, str]] = []
        self.asked: list[float] = []
        self.delivered_at: list[float] = []  # stream-clock time of each frame's delivery
        self._changed = threading.Condition()

    def want_frame(self, t: float) -> bool:
        self.asked.append(t)
        return self.want(t)

    def frame(self, t: float, rgb: np.ndarray) -> None:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        self._add(self.frames, (t, rgb))
        if self.clock is not None:
            self.delivered_at.append(self.clock.now())

    def audio(self, t: float, samples: np.ndarray) -> None:
        assert samples.dtype == np.float32 and samples.ndim == 1
        self._add(self.blocks, (t, samples))

    def notice(self, source: str, kind: str, message: str) -> None:
        assert "\n" not in message
        self._add(self.notices, (kind, message))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.notices]

    def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(condition, timeout)

    def _add(self, items: list, item: object) -> None:
        with self._changed:
            items.append(item)
            self._changed.notify_all()

    def samples(self) -> np.ndarray:
        return np.concatenate([s for _, s in self.blocks]) if self.blocks else np.zeros(0, np.float32)


def play(source, want: Callable[[float], bool] = lambda t: True) -> Recorder:
    clock = StreamClock()
    sink = Recorder(want, clock)
    source.run(clock, sink, threading.Event())
    return sink


@contextlib.contextmanager
def running(source, sink: Recorder, clock: StreamClock) -> Iterator[threading.Event]:
    """`source.run` in a thread, as the session runs it; stopped (and checked stopped) on exit."""
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(clock, sink, stop), daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=5)
        assert not thread.is_alive(), "run() did not return after stop"


# --------------------------------------------------------------------------------------------------
# Files


def test_file_fast_gives_frames_at_their_pts_and_the_whole_sound_track(clip):
    source = FileSource(clip, realtime=False)
    assert (source.video, source.audio) == (True, True)
    sink = play(source)

    numbers = [read_frame_number(rgb) for _, rgb in sink.frames]
    assert numbers == list(range(40))  # every frame, in order
    times = [t for t, _ in sink.frames]
    assert times == [stamp(k / 10) for k in range(40)]  # the clip's pts: frame k at k / 10 fps

    track = decode_audio(clip).samples
    np.testing.assert_allclose(sink.samples(), track, atol=1e-6)
    start = 0
    for t, block in sink.blocks:  # each block starts where the samples before it end
        assert t == stamp(start / 16000)
        start += block.size
    assert all(block.size == 3200 for _, block in sink.blocks[:-1])  # 0.2 s blocks
    assert sink.notices == [(ENDED, "the file played to its end")]


def test_file_fast_gives_the_same_packets_every_time(clip):
    first, second = play(FileSource(clip, realtime=False)), play(FileSource(clip, realtime=False))
    assert [t for t, _ in first.frames] == [t for t, _ in second.frames]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(first.frames, second.frames, strict=True))
    assert [t for t, _ in first.blocks] == [t for t, _ in second.blocks]
    assert np.array_equal(first.samples(), second.samples())


def test_file_converts_only_the_frames_the_sink_wants(clip):
    sink = play(FileSource(clip, realtime=False), want=lambda t: round(t * 10) % 10 == 0)
    assert len(sink.asked) == 40  # asked about every frame
    assert [read_frame_number(rgb) for _, rgb in sink.frames] == [0, 10, 20, 30]
    assert [t for t, _ in sink.frames] == [0.0, 1.0, 2.0, 3.0]


def test_file_realtime_plays_at_the_pace_of_the_clock(tmp_path):
    clip = make_test_clip(tmp_path / "two.mp4", seconds=2.0)
    clock = StreamClock()
    sink = Recorder(clock=clock)
    began = time.monotonic()
    FileSource(clip, realtime=True).run(clock, sink, threading.Event())
    took = time.monotonic() - began

    assert took >= 0.8 * 2.0  # not much faster than real time (the last frame is shown at 1.9 s)
    assert len(sink.frames) == 20
    # no frame comes before its time on the stream clock
    assert all(at >= t - 0.005 for (t, _), at in zip(sink.frames, sink.delivered_at, strict=True))
    assert sink.kinds()[-1] == ENDED


def test_file_stops_promptly_and_ends_with_ended(clip):
    clock, sink = StreamClock(), Recorder()
    with running(FileSource(clip, realtime=True), sink, clock) as stop:
        assert sink.wait_for(lambda: len(sink.frames) >= 3, timeout=10)
        stop.set()
        began = time.monotonic()
        assert sink.wait_for(lambda: ENDED in sink.kinds(), timeout=2)
        assert time.monotonic() - began < 1.0
    assert sink.notices[-1] == (ENDED, "stopped")
    assert len(sink.frames) < 40


def test_file_loop_goes_on_with_increasing_times(tmp_path):
    clip = make_test_clip(tmp_path / "one.mp4", seconds=1.0)
    clock, sink = StreamClock(), Recorder()
    with running(FileSource(clip, realtime=False, loop=True), sink, clock) as stop:
        assert sink.wait_for(lambda: len(sink.frames) >= 25, timeout=20)
        stop.set()
    numbers = [read_frame_number(rgb) for _, rgb in sink.frames[:25]]
    assert numbers == list(range(10)) * 2 + list(range(5))
    times = [t for t, _ in sink.frames]
    assert all(b > a for a, b in zip(times, times[1:]))
    # the second pass starts where the first ended (its sound track is a little longer than 1 s)
    audio_end = decode_audio(clip).duration
    assert times[10] == stamp(max(1.0, audio_end))


def test_audio_only_file(tmp_path):
    wav = make_test_wav(tmp_path / "tone.wav", seconds=1.5)
    source = FileSource(wav, realtime=False)
    assert (source.video, source.audio) == (False, True)
    sink = play(source)
    assert sink.frames == []
    np.testing.assert_allclose(sink.samples(), decode_audio(wav).samples, atol=1e-6)
    assert sink.notices == [(NOTICE, "no video track: audio only"), (ENDED, "the file played to its end")]


def test_video_without_audio_track_is_video_only():
    path = OPENCV_DATA / "vtest.avi"
    if not path.is_file():
        pytest.skip(f"{path} is not installed (Debian package opencv-doc)")
    source = FileSource(path, realtime=False)
    assert (source.video, source.audio) == (True, False)
    sink = Recorder(want=lambda t: len(sink.asked) <= 3)
    source.run(StreamClock(), sink, threading.Event())
    assert len(sink.asked) == 795 and len(sink.frames) == 3
    assert sink.frames[0][1].shape == (576, 768, 3)
    assert sink.blocks == []
    assert sink.notices == [(NOTICE, "no audio track: video only"), (ENDED, "the file played to its end")]


def test_damaged_audio_packet_is_skipped_and_counted():
    path = OPENCV_DATA / "Megamind.avi"
    if not path.is_file():
        pytest.skip(f"{path} is not installed (Debian package opencv-doc)")
    sink = play(FileSource(path, realtime=False), want=lambda t: False)
    assert len(sink.asked) == 270  # the video plays to its end
    # its frames' pts come out of the decoder shuffled (packed B-frames): the dts give the times
    assert sink.asked == sorted(sink.asked) and sink.asked[-1] == stamp(269 * 125 / 2997)
    kinds = sink.kinds()
    assert kinds[-1] == ENDED
    damage = [m for k, m in sink.notices if k == NOTICE]
    assert len(damage) == 1 and damage[0].startswith("skipped 1 damaged audio packet")
    # the stereo 24 kHz AC-3 track comes out as decode_audio gives it, damage skipped the same way
    np.testing.assert_allclose(sink.samples(), decode_audio(path).samples, atol=1e-6)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "nowhere.mp4", "media file not found"),
        (lambda d: d, "is not a file"),
        (lambda d: _write(d / "notes.mp4", b"not a video at all\n" * 100), "is not a media file"),
        (lambda d: _write(d / "empty.mp4", b""), "is empty"),
    ],
)
def test_unplayable_file_is_a_one_line_prompt_error(tmp_path, make, message):
    with pytest.raises(PromptError) as caught:
        FileSource(make(tmp_path), realtime=False)
    assert message in caught.value.message and "\n" not in caught.value.message
    assert caught.value.hint


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------------
# Network streams, served and pushed by the ffmpeg command


def count_kind(sink: Recorder, kind: str) -> int:
    return sink.kinds().count(kind)


def assert_monotonic(items: list[tuple[float, object]]) -> None:
    times = [t for t, _ in items]
    assert all(b >= a for a, b in zip(times, times[1:])), "stream times went backwards"


@needs_ffmpeg
def test_http_stream_reports_loss_reconnects_and_stops(clip):
    url = f"http://127.0.0.1:{free_port()}/live.ts"
    source = StreamSource(url, retry=Retry(first_delay=0.2, max_delay=0.5))
    clock, sink = StreamClock(), Recorder()
    with running(source, sink, clock) as stop:
        with serve_http(clip, url):
            assert sink.wait_for(lambda: len(sink.frames) >= 10 and len(sink.blocks) >= 3, timeout=20)
            lost_before = count_kind(sink, LOST)
        assert sink.wait_for(lambda: count_kind(sink, LOST) > lost_before, timeout=10)
        frames_before, last_t = len(sink.frames), sink.frames[-1][0]
        with serve_http(clip, url):
            assert sink.wait_for(lambda: len(sink.frames) >= frames_before + 10, timeout=20)
            assert RECONNECTED in sink.kinds()[lost_before:]
            assert sink.frames[frames_before][0] > last_t
            stop.set()
            began = time.monotonic()
            assert sink.wait_for(lambda: ENDED in sink.kinds(), timeout=2)
            assert time.monotonic() - began < 1.0
    assert sink.notices[-1] == (ENDED, "stopped")
    assert sink.notices[0][0] in (NOTICE, LOST)  # what the stream carries, or a refused first try
    assert any(m.startswith("receiving video (h264 160x120), audio (aac") for _, m in sink.notices)
    assert_monotonic(sink.frames)
    assert_monotonic(sink.blocks)


@needs_ffmpeg
def test_rtsp_listen_takes_a_pusher_then_the_next_one(clip):
    url = f"rtsp://127.0.0.1:{free_port()}/live"
    source = StreamSource(url, listen=True)
    clock, sink = StreamClock(), Recorder()
    push = ("-re", "-stream_loop", "-1", "-i", str(clip), "-c", "copy", "-f", "rtsp", url)
    with running(source, sink, clock):
        time.sleep(0.3)  # the source is listening
        with ffmpeg(*push):
            assert sink.wait_for(lambda: len(sink.frames) >= 10, timeout=20)
            assert sink.kinds()[0] == NOTICE  # what the pusher sends; listening is no loss
            assert LOST not in sink.kinds()
        assert sink.wait_for(lambda: LOST in sink.kinds(), timeout=10)
        assert (LOST, "the sender stopped; listening again") in sink.notices
        frames_before = len(sink.frames)
        time.sleep(0.3)
        with ffmpeg(*push):
            assert sink.wait_for(lambda: len(sink.frames) >= frames_before + 10, timeout=20)
            assert RECONNECTED in sink.kinds()
    assert sink.notices[-1] == (ENDED, "stopped")
    assert sink.blocks  # the AAC track comes through too
    assert_monotonic(sink.frames)
    assert_monotonic(sink.blocks)


@needs_ffmpeg
@pytest.mark.parametrize(
    ("url", "push"),
    [
        ("http://127.0.0.1:{port}/live.ts", ("-f", "mpegts", "-method", "POST")),
        ("tcp://127.0.0.1:{port}", ("-f", "mpegts")),
        ("rtmp://127.0.0.1:{port}/live/cam", ("-f", "flv")),
    ],
)
def test_other_protocols_listen_for_a_pusher(clip, url, push):
    url = url.format(port=free_port())
    clock, sink = StreamClock(), Recorder()
    with running(StreamSource(url, listen=True), sink, clock):
        time.sleep(0.3)
        with ffmpeg("-re", "-i", str(clip), "-c", "copy", *push, url):
            assert sink.wait_for(lambda: len(sink.frames) >= 5 and len(sink.blocks) >= 2, timeout=20)
    assert sink.notices[0][1].startswith("receiving video (h264 160x120), audio (aac")
    assert sink.notices[-1] == (ENDED, "stopped")


def test_stream_that_never_answers_gives_up_after_max_retries():
    with socket.socket() as silent:  # accepts connections and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/live.ts"
        source = StreamSource(url, open_timeout=0.3, read_timeout=0.3, retry=Retry(0.1, 0.2, max_retries=2))
        clock, sink = StreamClock(), Recorder()
        with running(source, sink, clock):
            assert sink.wait_for(lambda: ENDED in sink.kinds(), timeout=10)
    assert sink.notices == [
        (LOST, "no answer within 0.3 s; reconnecting"),
        (ENDED, "gave up after 3 failed tries (no answer within 0.3 s)"),
    ]


def test_stream_stops_within_a_second_while_its_open_is_blocked():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        source = StreamSource(f"rtsp://127.0.0.1:{silent.getsockname()[1]}/live")  # 10 s open timeout
        clock, sink = StreamClock(), Recorder()
        with running(source, sink, clock) as stop:
            time.sleep(0.3)
            stop.set()
            began = time.monotonic()
            assert sink.wait_for(lambda: ENDED in sink.kinds(), timeout=2)
            assert time.monotonic() - began < 1.0
    assert sink.notices == [(ENDED, "stopped")]


def test_refused_stream_is_lost_once_while_it_retries():
    source = StreamSource(f"http://127.0.0.1:{free_port()}/x.ts", retry=Retry(0.05, 0.1, max_retries=4))
    sink = play(source)
    assert [k for k, _ in sink.notices] == [LOST, ENDED]
    assert sink.notices[0][1] == "connection refused; reconnecting"


def test_stream_url_errors():
    with pytest.raises(PromptError, match="cannot listen for udp://"):
        StreamSource("udp://127.0.0.1:5000", listen=True)
    with pytest.raises(PromptError, match="not a stream URL"):
        StreamSource("ftp://example.org/x")
    if not protocol_available("srt"):  # PyAV's wheels are built without libsrt
        with pytest.raises(PromptError, match="cannot open srt:// URLs"):
            StreamSource("srt://127.0.0.1:9000")


def test_listening_where_another_program_listens_is_refused():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(PromptError) as caught:
            StreamSource(f"rtsp://127.0.0.1:{port}/live", listen=True)
    assert caught.value.message.startswith(f"cannot listen on 127.0.0.1:{port} (")
    assert "pick another port" in caught.value.hint


def test_names_hide_passwords():
    assert redact("rtsp://admin:secret@cam.local:554/stream1") == "rtsp://admin:***@cam.local:554/stream1"
    assert redact("rtsp://cam.local/stream1") == "rtsp://cam.local/stream1"
    assert StreamSource("rtsp://u:pw@127.0.0.1:8554/x").name == "rtsp://u:***@127.0.0.1:8554/x"


# --------------------------------------------------------------------------------------------------
# Stream times and audio blocks


def test_timeline_takes_out_jitter_and_never_runs_ahead_of_arrival():
    line = LiveTimeline(max_lag=0.5)
    # 40 ms frames sent at 100 + k * 0.04 (sender clock), delayed 50 ms plus up to 30 ms of jitter
    jitter = [0.0, 0.03, 0.01, 0.02, 0.0, 0.025, 0.005, 0.0]
    times = [line.at(100 + k * 0.04, 5.05 + k * 0.04 + j) for k, j in enumerate(jitter)]
    assert times == [stamp(5.05 + k * 0.04) for k in range(8)]  # evenly spaced, at the earliest arrival


def test_timeline_burst_then_live():
    line = LiveTimeline(max_lag=0.5)
    # two seconds of buffered audio arrive at once at t = 3, then blocks arrive live
    burst = [line.at(k * 0.2, 3.0, 0.2) for k in range(10)]
    assert all(t <= 3.0 - 0.2 for t in burst)  # never ahead of arrival
    live = [line.at(2.0 + k * 0.2, 3.0 + (k + 1) * 0.2, 0.2) for k in range(5)]
    assert live == [stamp(3.0 + k * 0.2) for k in range(5)]  # back-to-back blocks


def test_timeline_anchors_again_after_drift_or_a_jump_and_stays_monotonic():
    line = LiveTimeline(max_lag=0.5)
    assert line.at(0.0, 10.0) == 10.0
    assert line.at(1.0, 11.0) == 11.0
    assert line.at(1.5, 12.2) == 12.2  # the sender fell 0.7 s behind: anchored to arrival
    assert line.at(0.2, 12.3) == 12.3  # its clock jumped back: anchored, later than before
    line.restart()
    assert line.at(50.0, 12.25) == 12.3  # a new connection never goes back in time
    assert line.at(None, 13.0, 0.1) == 12.9  # no media time: arrival less duration


def test_audio_blocks_are_the_run_cut_in_equal_pieces():
    blocks = AudioBlocks(100)
    run = np.arange(1050, dtype=np.float32)
    out = blocks.push(run[:30]) + blocks.push(run[30:550]) + blocks.push(run[550:]) + blocks.flush()
    assert [start for start, _ in out] == list(range(0, 1100, 100))
    assert [b.size for _, b in out] == [100] * 10 + [50]
    assert np.array_equal(np.concatenate([b for _, b in out]), run)


def test_a_48khz_microphone_block_is_resampled_to_16khz():
    rate = 48000
    tone = np.sin(2 * np.pi * 440 * np.arange(rate) / rate).astype(np.float32)
    resampler = MonoResampler(16000)
    parts = [resampler.push(frame_from_samples(tone[i : i + 4800], rate)) for i in range(0, rate, 4800)]
    out = np.concatenate([*parts, resampler.flush()])
    assert abs(out.size - 16000) <= 16
    spectrum = np.abs(np.fft.rfft(out[:16000] if out.size >= 16000 else np.pad(out, (0, 16000 - out.size))))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1  # still a 440 Hz tone


# --------------------------------------------------------------------------------------------------
# Cameras and microphones: none on this machine, so their refusals


def test_missing_camera_is_a_one_line_prompt_error():
    if os.path.exists("/dev/video9"):
        pytest.skip("/dev/video9 exists here")
    with pytest.raises(PromptError) as caught:
        CameraSource("/dev/video9")
    assert caught.value.message == "no camera at /dev/video9"
    assert "/dev/video" in caught.value.hint
    with pytest.raises(PromptError, match="no camera at /dev/video9"):
        open_source("camera:9")


def test_a_device_that_is_not_a_camera_is_refused_when_probed():
    with pytest.raises(PromptError) as caught:
        CameraSource("/dev/null")  # a character device, but not V4L2
    assert caught.value.message.startswith("/dev/null cannot be opened as a camera (")
    with pytest.raises(PromptError, match="is not a camera device"):
        CameraSource(str(Path(__file__)))


def test_gstreamer_pipeline_without_opencv():
    try:
        import cv2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("OpenCV is installed here")
    with pytest.raises(PromptError, match="gst: pipelines need OpenCV"):
        open_source("gst:videotestsrc ! videoconvert ! appsink")


def test_no_microphone_is_a_prompt_error_the_session_can_turn_into_video_only():
    try:
        import sounddevice

        if sounddevice.query_devices(kind="input"):
            pytest.skip("an input device exists here")
    except Exception:  # no sounddevice, no PortAudio (OSError on import), or no input device
        pass
    with pytest.raises(PromptError) as caught:
        MicrophoneSource()
    assert caught.value.message.startswith("no microphone: ")
    assert "\n" not in caught.value.message and caught.value.hint


# --------------------------------------------------------------------------------------------------
# Source arguments


def test_parse_source_forms(clip):
    assert parse_source(str(clip)) == SourceSpec("file", str(clip))
    for url in [
        "rtsp://cam/1",
        "rtsps://cam/1",
        "http://h/x.ts",
        "https://h/x.m3u8",
        "udp://@:5000",
        "srt://h:1",
    ]:
        assert parse_source(url).kind == "stream"
    assert parse_source("/dev/video0").target == "/dev/video0"
    assert parse_source("camera:2").target == "/dev/video2"
    assert parse_source("gst:nvarguscamerasrc ! appsink").target == "gst:nvarguscamerasrc ! appsink"
    assert parse_source("mic").target is None
    assert parse_source("mic:USB Audio").target == "USB Audio"
    assert parse_source("mic:1").kind == "microphone"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no source given"),
        ("nowhere.mp4", "no such file: nowhere.mp4"),
        ("camera:front", "camera: takes a device number"),
        ("ftp://host/x", "unsupported URL scheme ftp://"),
        ("mic:", "mic: needs something after it"),
        ("gst:", "gst: needs something after it"),
    ],
)
def test_parse_source_refusals_say_what_is_accepted(spec, message):
    with pytest.raises(PromptError) as caught:
        parse_source(spec)
    assert message in caught.value.message and "\n" not in caught.value.message
    assert caught.value.hint


def test_open_source_builds_each_kind(clip):
    file = open_source(str(clip), realtime=False)
    assert isinstance(file, FileSource) and not file.realtime
    assert isinstance(open_source("rtsp://127.0.0.1:8554/live", listen=True), StreamSource)
    with pytest.raises(PromptError, match="only a stream URL can listen"):
        open_source(str(clip), listen=True)
