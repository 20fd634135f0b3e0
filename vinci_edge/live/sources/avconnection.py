"""One connection to a live source that FFmpeg reads (a network stream, a V4L2 camera), through
PyAV: opened, demuxed, decoded and stamped on the stream clock as it arrives.

Frames keep their decoded form until the sink asks for them (`Frame.image` converts to RGB), so a
frame the sink does not want costs no conversion. A packet that fails to decode is skipped and
counted: a live stream joined between keyframes starts with a few of those.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import av
import av.container

from vinci_edge.live.packets import NOTICE, StreamClock
from vinci_edge.live.sources.audio import SAMPLE_RATE, AudioBlocks, MonoResampler
from vinci_edge.live.sources.live import Audio, ConnectionFailed, Frame, GiveUp, Item, NobodyYet, Notice
from vinci_edge.live.sources.timeline import LiveTimeline
from vinci_edge.media.decode import _Damage, _decode_packet, _video_streams


@dataclass
class SourceState:
    """What a source keeps across its connections: its timelines (times stay monotonic across
    reconnects) and what the last connection carried (a reconnect tells only a change)."""

    video: LiveTimeline = field(default_factory=LiveTimeline)
    audio: LiveTimeline = field(default_factory=LiveTimeline)
    described: str = ""
    has_video: bool | None = None  # None until a connection says
    has_audio: bool | None = None
    damage: _Damage = field(default_factory=_Damage)  # packets that failed to decode, all connections


@dataclass
class Opening:
    """How to open a source with PyAV."""

    url: str
    format: str | None  # the demuxer, when FFmpeg cannot tell from the URL ("v4l2")
    options: dict[str, str]
    timeout: tuple[float | None, float]  # PyAV's (open, read) timeouts in seconds
    listening: bool  # the open waits for a sender: running out of time is "nobody yet"
    audio_expected: bool = True  # a stream without audio says so (a camera never has any)


class AvConnection:
    """A context manager: entering opens the source and gives an iterator of stamped items."""

    def __init__(
        self,
        opening: Opening,
        clock: StreamClock,
        stop: threading.Event,
        state: SourceState,
        block_samples: int,
    ) -> None:
        self.opening = opening
        self.clock = clock
        self.stop = stop
        self.state = state
        self.block_samples = block_samples
        self._container: av.container.InputContainer | None = None

    def __enter__(self) -> Iterator[Item]:
        self._container = _open(self.opening)
        video = _video_streams(self._container)[:1]
        audio = list(self._container.streams.audio[:1])
        streams = [s for s in video + audio if s.codec_context is not None]
        if not streams:
            self._container.close()  # __exit__ is not called when __enter__ raises
            raise ConnectionFailed("the stream holds no audio or video FFmpeg can decode")
        self.state.video.restart()
        self.state.audio.restart()
        return self._items(streams)

    def __exit__(self, *exc: object) -> None:
        if self._container is not None:
            self._container.close()

    def _items(self, streams: list[Any]) -> Iterator[Item]:
        yield from self._describe(streams)
        resampler, blocks = MonoResampler(SAMPLE_RATE), AudioBlocks(self.block_samples)
        arrival = self.clock.now()
        failure = None
        try:
            for packet in self._container.demux(streams):
                arrival = self.clock.now()
                if self.stop.is_set():
                    return
                if not packet.size:
                    continue
                for frame in _decode_packet(packet.stream, packet, self.state.damage):
                    if isinstance(frame, av.VideoFrame):
                        yield self._frame(frame, packet.stream.time_base, arrival)
                    else:
                        yield from self._audio(blocks, resampler.push(frame), arrival)
        except (av.FFmpegError, OSError) as exc:
            failure = ConnectionFailed(self._read_error(exc))
        yield from self._audio(blocks, resampler.flush(), arrival)
        yield from self._audio(blocks, None, arrival)
        if failure is not None:
            raise failure

    def _read_error(self, exc: BaseException) -> str:
        if isinstance(exc, av.ExitError):  # PyAV's read timeout interrupted FFmpeg
            return f"no data for {self.opening.timeout[1]:g} s"
        return describe_error(exc)

    def _frame(self, frame: av.VideoFrame, time_base: Any, arrival: float) -> Frame:
        media = None if frame.pts is None or not time_base else float(frame.pts * time_base)
        t = self.state.video.at(media, arrival)
        return Frame(t, partial(frame.to_ndarray, format="rgb24"))

    def _audio(self, blocks: AudioBlocks, samples: Any, arrival: float) -> Iterator[Audio]:
        """Blocks that `samples` completes (all that is held when `samples` is None), stamped by the
        sample count since the connection opened."""
        done = blocks.flush() if samples is None else blocks.push(samples)
        for start, block in done:
            t = self.state.audio.at(start / SAMPLE_RATE, arrival, block.size / SAMPLE_RATE)
            yield Audio(t, block)

    def _describe(self, streams: list[Any]) -> Iterator[Notice]:
        """A notice of what the stream carries, when it is the first or differs from the last."""
        state = self.state
        state.has_video = any(s.type == "video" for s in streams)
        state.has_audio = any(s.type == "audio" for s in streams)
        parts = [_stream_text(s) for s in streams]
        if not state.has_audio and self.opening.audio_expected:
            parts.append("no audio track: video only")
        elif not state.has_video:
            parts.append("no video track: audio only")
        text = "receiving " + ", ".join(parts)
        if state.described != text:
            state.described = text
            yield Notice(NOTICE, text)


def _open(opening: Opening) -> av.container.InputContainer:
    began = time.monotonic()
    try:
        return av.open(opening.url, format=opening.format, options=opening.options, timeout=opening.timeout)
    except av.ProtocolNotFoundError as exc:
        raise GiveUp(f"this FFmpeg cannot open {opening.url.split(':', 1)[0]}: URLs") from exc
    except (av.FFmpegError, OSError) as exc:
        if opening.listening and isinstance(exc, TimeoutError):
            raise NobodyYet() from exc
        limit = opening.timeout[0]
        if limit is not None and time.monotonic() - began >= limit:
            # PyAV interrupted the open; FFmpeg then reports whatever the protocol made of it
            # (RTSP: "invalid data"), so say what happened instead
            raise ConnectionFailed(f"no answer within {limit:g} s") from exc
        raise ConnectionFailed(describe_error(exc)) from exc


def describe_error(exc: BaseException) -> str:
    """An FFmpeg or OS error in a few words, without the URL (which may hold a password)."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text[:1].lower() + text[1:]


def _stream_text(stream: Any) -> str:
    ctx = stream.codec_context
    if stream.type == "video":
        return f"video ({ctx.name} {ctx.width}x{ctx.height})"
    return f"audio ({ctx.name} {ctx.sample_rate} Hz)"
