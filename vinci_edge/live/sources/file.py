"""A media file played as if it were live: its frames and its sound, at their media times.

Times are the file's presentation times in seconds from its start (the container's start time, where
its first packet is). Video frames are at their timestamps (FFmpeg's best-effort pick between pts
and dts, never going back); audio blocks follow one another
exactly (a block's time is the track's first sample time plus the samples before it over the rate),
so the blocks concatenated are the track that `vinci_edge.media.decode.decode_audio` decodes.
Played fast, the same file gives the same frames, times and samples every time.

`realtime=True` paces delivery on the stream clock as a camera and a microphone would: a frame when
it is shown, an audio block when its last sample has been heard, the file's start at the stream time
`run` began. `realtime=False` delivers as fast as the sink takes it, at the media times themselves.
A packet that fails to decode is skipped and counted (a notice at the end says how many).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.container
import numpy as np

from vinci_edge.errors import MediaError, PromptError
from vinci_edge.live.packets import ENDED, NOTICE, Sink, StreamClock, stamp
from vinci_edge.live.sources.audio import BLOCK_SECONDS, SAMPLE_RATE, AudioBlocks, MonoResampler
from vinci_edge.media.decode import (
    _audio_damage_warning,
    _Damage,
    _decode_packet,
    _existing_file,
    _open,
    _video_damage_warning,
    _video_streams,
)


@dataclass
class _Played:
    """A frame or an audio block of one pass through the file, at its media time (seconds)."""

    t: float
    duration: float
    frame: av.VideoFrame | None = None
    samples: np.ndarray | None = None


class FileSource:
    """A video or audio file delivered as a live source would deliver it (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike,
        realtime: bool,
        loop: bool = False,
        *,
        block_seconds: float = BLOCK_SECONDS,
    ) -> None:
        """Probe the file: what it holds sets `video` and `audio`; a file that cannot be played is
        a PromptError here, not in `run`."""
        self.path = Path(path)
        self.name = str(path)
        self.realtime = realtime
        self.loop = loop
        self.video, self.audio = _probe(self.path)
        self._block_samples = max(1, round(block_seconds * SAMPLE_RATE))
        self.damage = {"video": _Damage(), "audio": _Damage()}  # packets skipped, summed over passes

    def run(self, clock: StreamClock, sink: Sink, stop: threading.Event) -> None:
        if not self.audio:
            sink.notice(self.name, NOTICE, "no audio track: video only")
        if not self.video:
            sink.notice(self.name, NOTICE, "no video track: audio only")
        why = self._play_passes(clock, sink, stop)
        for notice in self._damage_notices():
            sink.notice(self.name, NOTICE, notice)
        sink.notice(self.name, ENDED, why)

    def _play_passes(self, clock: StreamClock, sink: Sink, stop: threading.Event) -> str:
        """Play the file once, or again and again when looping; why it ended."""
        start = clock.now() if self.realtime else 0.0
        while True:
            try:
                played = self._play(start, clock, sink, stop)
            except (av.FFmpegError, OSError) as exc:  # demuxers read around damage; this is worse
                return f"reading the file failed ({exc.strerror or exc})"
            if played is None:
                return "stopped"
            if not (self.loop and played > 0):
                return "the file played to its end"
            start += played  # the next pass follows this one

    def _play(self, start: float, clock: StreamClock, sink: Sink, stop: threading.Event) -> float | None:
        """One pass through the file, its times shifted by `start`: how long it lasted (media
        time), or None when `stop` came first."""
        end = 0.0
        with _open(self.path) as container:
            for item in self._media(container):
                t = stamp(start + item.t)
                if item.frame is not None:
                    if not self._due(t, clock, stop):
                        return None
                    if sink.want_frame(t):
                        sink.frame(t, item.frame.to_ndarray(format="rgb24"))
                else:
                    if not self._due(stamp(t + item.duration), clock, stop):  # its last sample heard
                        return None
                    sink.audio(t, item.samples)
                end = max(end, item.t + item.duration)
        return end

    def _due(self, t: float, clock: StreamClock, stop: threading.Event) -> bool:
        """Wait for stream time `t` when pacing; False when `stop` was set."""
        if self.realtime:
            return clock.sleep_until(t, stop)
        return not stop.is_set()

    def _media(self, container: av.container.InputContainer) -> Iterator[_Played]:
        """The file's frames and audio blocks in the order it holds them, at media times."""
        origin = container.start_time / av.time_base if container.start_time is not None else 0.0
        resampler, blocks = MonoResampler(SAMPLE_RATE), AudioBlocks(self._block_samples)
        video_times = _VideoTimes(origin)
        audio_start = None  # the first audio frame's time
        for stream, frame in self._decoded(container, _playable(container)):
            if stream.type == "video":
                t, duration = video_times.time(frame, stream)
                yield _Played(t, duration, frame=frame)
                continue
            if audio_start is None:
                audio_start = _seconds(frame.pts, stream.time_base, origin) or 0.0
            yield from _blocks(blocks.push(resampler.push(frame)), audio_start)
        yield from _blocks(blocks.push(resampler.flush()) + blocks.flush(), audio_start or 0.0)

    def _decoded(
        self, container: av.container.InputContainer, streams: list[Any]
    ) -> Iterator[tuple[Any, av.frame.Frame]]:
        """(stream, frame) in demux order, skipping (and counting) packets that fail to decode, then
        what the decoders still hold. An empty packet is no data (see `decode._decode_stream`)."""
        for packet in container.demux(streams):
            if packet.size:
                stream = packet.stream
                for frame in _decode_packet(stream, packet, self.damage[stream.type]):
                    yield stream, frame
        for stream in streams:
            for frame in _decode_packet(stream, None, self.damage[stream.type]):
                yield stream, frame

    def _damage_notices(self) -> list[str]:
        notices = []
        if self.damage["video"].packets:
            notices.append(_video_damage_warning(self.damage["video"]))
        if self.damage["audio"].packets:
            notices.append(_audio_damage_warning(self.damage["audio"]))
        return notices


class _VideoTimes:
    """Media times of decoded frames, as FFmpeg's best-effort timestamp picks them.

    A frame's timestamp is its pts, unless the pts have come out of order more often than the dts
    have (AVI with packed B-frames, as in Megamind.avi, gives decoded frames shuffled pts): then
    its dts (`guess_correct_pts` in libavcodec, which the ffmpeg command uses). Times never go
    back; a frame with neither is one frame after the previous one. Timestamps are read in the
    stream's time base: frames drained from the decoder carry none of their own.
    """

    def __init__(self, origin: float) -> None:
        self.origin = origin
        self.last: float | None = None
        self._last_pts: int | None = None
        self._last_dts: int | None = None
        self._faulty_pts = 0
        self._faulty_dts = 0

    def time(self, frame: av.VideoFrame, stream: Any) -> tuple[float, float]:
        """(time, duration) of `frame`, in seconds."""
        rate = stream.average_rate or stream.guessed_rate
        duration = float(frame.duration * stream.time_base) if frame.duration else 0.0
        duration = duration or (1.0 / float(rate) if rate else 0.04)
        t = _seconds(self._best_effort(frame.pts, frame.dts), stream.time_base, self.origin)
        if t is None:
            t = 0.0 if self.last is None else self.last + duration
        t = t if self.last is None else max(t, self.last)
        self.last = t
        return t, duration

    def _best_effort(self, pts: int | None, dts: int | None) -> int | None:
        if dts is not None:
            self._faulty_dts += self._last_dts is not None and dts <= self._last_dts
            self._last_dts = dts
        elif pts is not None:
            self._last_dts = pts
        if pts is not None:
            self._faulty_pts += self._last_pts is not None and pts <= self._last_pts
            self._last_pts = pts
        elif dts is not None:
            self._last_pts = dts
        if pts is not None and (self._faulty_pts <= self._faulty_dts or dts is None):
            return pts
        return dts


def _seconds(pts: int | None, time_base: Any, origin: float) -> float | None:
    return None if pts is None else float(pts * time_base) - origin


def _blocks(blocks: list[tuple[int, np.ndarray]], start: float) -> Iterator[_Played]:
    for offset, samples in blocks:
        yield _Played(start + offset / SAMPLE_RATE, samples.size / SAMPLE_RATE, samples=samples)


def _playable(container: av.container.InputContainer) -> list[Any]:
    """The first video stream and the first audio stream that FFmpeg can decode."""
    video = [s for s in _video_streams(container)[:1] if s.codec_context is not None]
    audio = [s for s in container.streams.audio[:1] if s.codec_context is not None]
    return video + audio


def _probe(path: Path) -> tuple[bool, bool]:
    """(has video, has audio), or a PromptError saying why the file cannot be played."""
    try:
        path = _existing_file(path)
        with _open(path) as container:
            kinds = {s.type for s in _playable(container)}  # read before the container closes
    except MediaError as exc:
        raise PromptError(exc.message, hint=exc.hint) from None
    if not kinds:
        raise PromptError(
            f"{path} holds no audio or video FFmpeg can decode",
            hint="give a video (mp4, mkv, webm, avi, mov) or audio (wav, mp3, flac, ogg) file",
        )
    return "video" in kinds, "audio" in kinds
