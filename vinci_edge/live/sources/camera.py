"""A camera as a live source: a V4L2 device read by PyAV, or a GStreamer pipeline read by OpenCV.

PyAV's wheels carry FFmpeg's `v4l2` demuxer, so a USB or CSI camera exposed as /dev/videoN needs
nothing else. A `gst:` pipeline (a Jetson's CSI camera through nvarguscamerasrc) needs OpenCV built
with GStreamer: JetPack's OpenCV is; pip's opencv-python-headless is not. Frames are stamped on the
stream clock as they arrive; a camera that stops delivering (unplugged, a stalled pipeline) is
reported LOST and opened again, like a network stream.

The constructor opens the camera once and closes it, so a wrong device, a missing driver or a
permission problem is a PromptError before the session starts, not a LOST notice forever after.
"""

from __future__ import annotations

import glob
import os
import re
import stat
import threading
from collections.abc import Iterator
from functools import partial
from typing import Any

import av
import numpy as np

from vinci_edge.errors import PromptError
from vinci_edge.live.packets import Sink, StreamClock
from vinci_edge.live.sources.audio import SAMPLE_RATE
from vinci_edge.live.sources.avconnection import AvConnection, Opening, SourceState, describe_error
from vinci_edge.live.sources.live import ConnectionFailed, Frame, Item, LiveRunner, Retry
from vinci_edge.live.sources.timeline import LiveTimeline

GST_PREFIX = "gst:"


class CameraSource:
    """Frames from a V4L2 camera (`/dev/video0`, or its index 0) or a GStreamer pipeline
    (`gst:<pipeline ending in appsink>`), stamped by the stream clock at arrival."""

    realtime = True
    video = True
    audio = False

    def __init__(
        self,
        device: str | int,
        *,
        retry: Retry | None = None,
        options: dict[str, str] | None = None,
        read_timeout: float = 5.0,
    ) -> None:
        """`options` go to FFmpeg's v4l2 demuxer (`video_size`, `framerate`, `input_format`);
        `read_timeout` is how long a silent camera is waited for before it counts as lost."""
        retry = retry or Retry()
        if isinstance(device, str) and device.startswith(GST_PREFIX):
            pipeline = device[len(GST_PREFIX) :].strip()
            self.name = "GStreamer camera"
            self._runner = LiveRunner(self.name, _gstreamer(pipeline), retry, ended="the pipeline ended")
            return
        path = device_path(device)
        self.name = f"camera {path}"
        opening = Opening(
            url=path,
            format="v4l2",
            options=dict(options or {}),
            timeout=(read_timeout, read_timeout),
            listening=False,
            audio_expected=False,
        )
        _check_v4l2(opening)
        state = SourceState()
        self._runner = LiveRunner(
            self.name,
            lambda clock, stop: AvConnection(opening, clock, stop, state, SAMPLE_RATE),
            retry,
            ended="the camera stopped",
        )

    def run(self, clock: StreamClock, sink: Sink, stop: threading.Event) -> None:
        self._runner.run(clock, sink, stop)


def device_path(device: str | int) -> str:
    """`/dev/videoN` for an index (0 or "0"); a path stays as it is."""
    if isinstance(device, int) or device.isdigit():
        return f"/dev/video{int(device)}"
    return device


# --------------------------------------------------------------------------------------------------
# V4L2 through PyAV


def _check_v4l2(opening: Opening) -> None:
    """Refuse a device that is not there, not a device, not ours to open, or not a camera."""
    path = opening.url
    if not os.path.exists(path):
        raise PromptError(f"no camera at {path}", hint=cameras_hint())
    if not stat.S_ISCHR(os.stat(path).st_mode):
        raise PromptError(f"{path} is not a camera device", hint=cameras_hint())
    if not os.access(path, os.R_OK | os.W_OK):
        raise PromptError(
            f"no permission to open {path}",
            hint="add yourself to the video group (`sudo usermod -aG video $USER`, then log in again)",
        )
    if not any("v4l2" in name.split(",") for name in av.formats_available):
        raise PromptError(
            "this PyAV's FFmpeg has no v4l2 input, so it cannot read cameras",
            hint="install PyAV from its wheels (`pip install av`), which include v4l2",
        )
    try:
        av.open(path, format=opening.format, options=opening.options, timeout=opening.timeout).close()
    except (av.FFmpegError, OSError) as exc:
        raise PromptError(
            f"{path} cannot be opened as a camera ({describe_error(exc)})",
            hint="a UVC camera's odd-numbered node carries metadata, not video; " + cameras_hint(),
        ) from None


def cameras_hint() -> str:
    """Which V4L2 devices exist here, for an error's hint."""
    found = sorted(glob.glob("/dev/video*"), key=lambda p: [int(n) for n in re.findall(r"\d+", p)])
    if found:
        return "cameras here: " + ", ".join(found)
    return (
        "no /dev/video* device exists here: plug a camera in "
        "(in a container, pass it with --device /dev/video0)"
    )


# --------------------------------------------------------------------------------------------------
# GStreamer through OpenCV


def _gstreamer(pipeline: str):
    """The connect function for a GStreamer pipeline, once OpenCV shows it can run it."""
    if not pipeline:
        raise PromptError("gst: needs a pipeline after it", hint=_GST_HINT)
    cv2 = _opencv_with_gstreamer()
    capture = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
    opened = capture.isOpened()
    capture.release()
    if not opened:
        raise PromptError("the GStreamer pipeline did not start", hint=_GST_HINT)
    timeline = LiveTimeline()
    return lambda clock, stop: _CvConnection(cv2, pipeline, clock, stop, timeline)


_GST_HINT = (
    "try it with gst-launch-1.0 first; it must end in `videoconvert ! video/x-raw,format=BGR ! appsink`"
)


def _opencv_with_gstreamer() -> Any:
    try:
        import cv2
    except ImportError:
        raise PromptError(
            "gst: pipelines need OpenCV (cv2), which is not installed",
            hint="on a Jetson: `sudo apt-get install python3-opencv` (JetPack's OpenCV has GStreamer); "
            "pip's opencv-python-headless has no GStreamer",
        ) from None
    if not has_gstreamer(cv2.getBuildInformation()):
        raise PromptError(
            "this OpenCV is built without GStreamer, so gst: pipelines cannot run",
            hint="use an OpenCV built with GStreamer (JetPack's, or Debian's python3-opencv), "
            "not pip's opencv-python(-headless)",
        )
    return cv2


def has_gstreamer(build_information: str) -> bool:
    """Whether `cv2.getBuildInformation()` lists GStreamer as built in ("GStreamer: YES (1.20.3)")."""
    return any(
        line.strip().startswith("GStreamer:") and "YES" in line for line in build_information.splitlines()
    )


class _CvConnection:
    """An open OpenCV capture; the iterator gives its frames until a read fails."""

    def __init__(self, cv2: Any, pipeline: str, clock: StreamClock, stop: threading.Event, timeline) -> None:
        self.cv2, self.pipeline, self.clock, self.stop, self.timeline = cv2, pipeline, clock, stop, timeline
        self.capture = None

    def __enter__(self) -> Iterator[Item]:
        self.capture = self.cv2.VideoCapture(self.pipeline, self.cv2.CAP_GSTREAMER)
        if not self.capture.isOpened():
            raise ConnectionFailed("the GStreamer pipeline did not start")
        return self._frames()

    def __exit__(self, *exc: object) -> None:
        if self.capture is not None:
            self.capture.release()

    def _frames(self) -> Iterator[Item]:
        while not self.stop.is_set():
            ok, bgr = self.capture.read()
            arrival = self.clock.now()
            if not ok:
                raise ConnectionFailed("the camera stopped delivering frames")
            yield Frame(self.timeline.at(None, arrival), partial(_rgb, bgr))


def _rgb(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgr[..., ::-1])
