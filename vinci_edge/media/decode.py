"""Decode media files into numpy arrays: sampled RGB frames, mono float32 audio, RGB images.

PyAV (FFmpeg) does the decoding, Pillow the images; nothing here imports torch. Every way a file can
be unusable (missing, not media, truncated, no stream of the wanted kind, a still image given as a
video, undecodable codec, empty) raises `MediaError` with a message that says what is wrong and a
hint that says what to do. Damage that leaves the file usable (a broken packet, a truncated tail, no
audio track in a video) is decoded around and reported in the result's `warnings`; an empty packet
is not damage.

Video frames are sampled the official way (`vinci_edge.timeline.sample_frame_indices` over the exact
number of frames in the stream). Container metadata is not trusted for that number: an MP4 edit
list can hide a frame the header still counts, and a truncated file holds fewer frames than its
header says. So a cheap first pass demuxes the video packets without decoding them and counts the
frames, and a second pass decodes and keeps only the sampled frames.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import av.container
import av.stream
import numpy as np
from PIL import Image, UnidentifiedImageError

from vinci_edge.errors import MediaError
from vinci_edge.timeline import sample_frame_indices

NO_AUDIO_WARNING = "no audio track: answering from the frames only"


@dataclass
class DecodedAudio:
    """Mono float32 samples at `sample_rate`, the whole track (no trimming, no padding)."""

    samples: np.ndarray
    sample_rate: int
    warnings: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / self.sample_rate


@dataclass
class DecodedVideo:
    """The sampled frames of a video, where they come from, and its audio track.

    Each warning is in one place, with what it is about: `warnings` holds those about the video
    stream and about a missing or unusable audio track; the track's own (damaged packets) are in
    `audio.warnings`. A caller that shows both lists shows each problem once.
    """

    frames: list[np.ndarray]  # RGB uint8 HxWx3, in order; duplicates kept for short clips
    frame_indices: np.ndarray  # int64 source index of each kept frame
    expected_frame_count: int  # frames asked for (some may have failed to decode)
    n_source_frames: int  # frames in the stream, counted
    fps: float  # stream average frame rate
    audio: DecodedAudio | None  # None without a usable audio track (see `warnings`)
    warnings: list[str] = field(default_factory=list)

    @property
    def frame_times(self) -> np.ndarray:
        return self.frame_indices.astype(np.float64) / self.fps

    @property
    def duration(self) -> float:
        return self.n_source_frames / self.fps


# --------------------------------------------------------------------------------------------------
# Public entry points


def decode_video(
    path: str | os.PathLike, num_frames: int, load_audio: bool = True, sample_rate: int = 16000
) -> DecodedVideo:
    """Decode `num_frames` frames sampled uniformly over the whole video, and its audio track.

    A video without an audio track (or with one that cannot be decoded) is not an error: `audio` is
    None and a warning says the answer comes from the frames only.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    path = _existing_file(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        count = _count_video_frames(container, stream)
        _refuse_still_image(container, stream, count.n_frames, path)
        fps = _frame_rate(stream, path)
        declared, stream_index = stream.frames, stream.index

    warnings: list[str] = []
    if declared and declared - count.n_frames > 1:
        warnings.append(
            f"the container declares {declared} video frames but only {count.n_frames} are present "
            "(truncated or damaged file?): sampling over the frames that are there"
        )
    frames, kept, n_frames = _sample_frames(path, stream_index, count, num_frames, warnings)
    audio = _video_audio(path, sample_rate, warnings) if load_audio else None
    return DecodedVideo(
        frames=frames,
        frame_indices=kept,
        expected_frame_count=num_frames,
        n_source_frames=n_frames,
        fps=fps,
        audio=audio,
        warnings=warnings,
    )


def decode_audio(path: str | os.PathLike, sample_rate: int = 16000) -> DecodedAudio:
    """Decode an audio file (wav, mp3, flac, ogg, ...) or the audio track of a video file to mono
    float32 at `sample_rate`. Damaged packets are skipped with a warning."""
    path = _existing_file(path)
    with _open(path) as container:
        if not container.streams.audio:
            kinds = "a video stream only" if _video_streams(container) else "no audio stream"
            raise MediaError(
                f"{path} has {kinds}: there is no audio to decode",
                hint="give a file with sound (wav, mp3, flac, ogg, or a video with an audio track)",
            )
        stream = container.streams.audio[0]
        return _decode_audio_stream(container, stream, sample_rate, path)


def decode_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image to RGB uint8 HxWx3, the way the official code opens images
    (`Image.open(path).convert("RGB")`, no EXIF rotation)."""
    path = _existing_file(path)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError as exc:
        raise MediaError(
            f"{path} is not an image Pillow can read",
            hint="give a PNG, JPEG, WebP, BMP or GIF file; for a video, pass it as a video",
        ) from exc
    except (OSError, ValueError) as exc:  # truncated or otherwise broken image data
        raise MediaError(
            f"{path} could not be decoded as an image ({exc})",
            hint="the file looks damaged; re-export or re-download it",
        ) from exc


def probe(path: str | os.PathLike) -> dict[str, Any]:
    """A summary of a media file's streams from its metadata (nothing is decoded, so `n_frames` is
    the container's estimate; `decode_video` counts exactly)."""
    path = _existing_file(path)
    with _open(path) as container:
        info: dict[str, Any] = {
            "path": str(path),
            "format": container.format.name,
            "duration": container.duration / av.time_base if container.duration else None,
            "has_video": bool(_video_streams(container)),
            "has_audio": bool(container.streams.audio),
            "video_codec": None,
            "width": None,
            "height": None,
            "fps": None,
            "n_frames": None,
            "audio_codec": None,
            "sample_rate": None,
            "channels": None,
        }
        if _video_streams(container):
            video = _video_streams(container)[0]
            fps = float(video.average_rate or video.guessed_rate or 0) or None
            n_frames = video.frames or None
            if n_frames is None and fps and info["duration"]:
                n_frames = round(info["duration"] * fps)
            info.update(
                video_codec=_codec_name(video),
                width=video.codec_context.width if video.codec_context else None,
                height=video.codec_context.height if video.codec_context else None,
                fps=fps,
                n_frames=n_frames,
            )
        if container.streams.audio:
            audio = container.streams.audio[0]
            ctx = audio.codec_context
            info.update(
                audio_codec=_codec_name(audio),
                sample_rate=ctx.sample_rate if ctx else None,
                channels=ctx.channels if ctx else None,
            )
        return info


# --------------------------------------------------------------------------------------------------
# Opening files


def _existing_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"media file not found: {path}", hint="check the path and that the file exists")
    if not path.is_file():
        raise MediaError(f"{path} is not a file", hint="give the path of a media file, not a folder")
    if path.stat().st_size == 0:
        raise MediaError(
            f"{path} is empty (0 bytes)", hint="the file was not written completely; recreate it"
        )
    return path


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        raise MediaError(
            f"{path} is not a media file FFmpeg can read ({exc.strerror or exc})",
            hint="give a video (mp4, mkv, webm, avi, mov) or audio (wav, mp3, flac, ogg) file; "
            "a truncated MP4 whose index (moov atom) is at the end cannot be opened",
        ) from exc
    except OSError as exc:
        raise MediaError(f"{path} cannot be read ({exc})", hint="check the file's permissions") from exc


def _codec_name(stream: av.stream.Stream) -> str | None:
    return stream.codec_context.name if stream.codec_context is not None else None


def _video_streams(container: av.container.InputContainer) -> list[av.video.stream.VideoStream]:
    """The real video streams: cover art in a music file (mp3, m4a) is a one-picture "video" stream
    flagged attached_pic, and is not a video."""
    return [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    streams = _video_streams(container)
    if not streams:
        kind = "an audio file" if container.streams.audio else "a file without video"
        raise MediaError(
            f"{path} is {kind}: it has no video stream",
            hint="pass it as audio (<sound>) instead of video" if container.streams.audio else None,
        )
    stream = streams[0]
    if stream.codec_context is None:
        raise MediaError(
            f"the video codec of {path} is not supported (FFmpeg has no decoder for it)",
            hint="re-encode it, e.g. `ffmpeg -i in -c:v libx264 -c:a aac out.mp4`",
        )
    return stream


# The demuxers FFmpeg reads picture files with: "image2" (picked by file extension, as for .jpg),
# "image2pipe", and one "<format>_pipe" per picture format, picked by content (png_pipe, bmp_pipe,
# webp_pipe, tiff_pipe, jpeg_pipe, ...; no other demuxer's name ends in "_pipe": the raw-video
# yuv4mpegpipe has no underscore); and the two whose pictures can be animated, GIF and APNG.
_PICTURE_DEMUXERS = frozenset({"image2", "image2pipe", "gif", "apng"})


def _refuse_still_image(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, n_frames: int, path: Path
) -> None:
    """Refuse a still picture opened as a video (a PNG given as --video): FFmpeg reads it as a
    one-frame stream, and sampling would turn it into `num_frames` copies of one frame at t = 0.

    What the file is comes from its container, not from its frame count alone: a file read by a
    picture demuxer and holding one frame is an image. A one-frame clip in a video container (mp4,
    mov, mkv, avi, webm) stays a video whatever its codec, PNG or MJPEG in a .mov included: it was
    made as a video. The frame count only tells a still picture from an animated GIF or APNG (or
    pictures piped one after another), which are moving pictures and decode as videos.
    """
    demuxer = container.format.name
    is_picture_format = demuxer in _PICTURE_DEMUXERS or demuxer.endswith("_pipe")
    if is_picture_format and n_frames == 1:
        raise MediaError(
            f"{path} is an image (one {_codec_name(stream)} picture), not a video: as a video it would "
            "be the same frame repeated at t = 0",
            hint="pass it as an image: `--image` on the command line, `image=` in the Python API",
        )


def _frame_rate(stream: av.video.stream.VideoStream, path: Path) -> float:
    rate = stream.average_rate or stream.guessed_rate
    if not rate or rate <= 0:
        raise MediaError(
            f"{path} does not say its frame rate", hint="re-mux or re-encode it with a fixed frame rate"
        )
    return float(rate)


# --------------------------------------------------------------------------------------------------
# Video frames


@dataclass
class _FrameCount:
    n_frames: int
    pts: list[int] | None  # presentation timestamps of the frames, when every packet has a distinct one


def _count_video_frames(container: av.container.InputContainer, stream: av.stream.Stream) -> _FrameCount:
    """Count frames by demuxing the packets without decoding them (cheap).

    The empty packet at the end only flushes the decoder, and a packet flagged discard (MP4 edit
    list: a frame outside the presentation) never comes out of the decoder, so neither counts.
    """
    pts = [p.pts for p in container.demux(stream) if p.size and not p.is_discard]
    if None in pts or len(set(pts)) != len(pts):
        return _FrameCount(len(pts), None)
    return _FrameCount(len(pts), sorted(pts))


def _sample_frames(
    path: Path, stream_index: int, count: _FrameCount, num_frames: int, warnings: list[str]
) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Decode the officially sampled frames: (RGB frames, their source indices, frames in stream)."""
    if count.n_frames == 0:
        raise MediaError(
            f"{path} has a video stream but no video frames in it",
            hint="the file is empty or truncated; re-export or re-download it",
        )
    n_frames = count.n_frames
    targets = sample_frame_indices(n_frames, num_frames)
    result = _decode_frames(path, stream_index, targets, count.pts)
    if result.n_decoded == 0:
        raise MediaError(
            f"no video frame of {path} could be decoded ({result.damage.first_error or 'no frame came out'})",
            hint="the video stream is damaged or uses a codec variant FFmpeg cannot decode; "
            "re-encode it, e.g. `ffmpeg -i in -c:v libx264 -c:a aac out.mp4`",
        )
    if not result.indexed_by_pts and result.n_decoded != n_frames:
        # Frames were indexed by output order and their count disagrees with the packet count
        # (several frames in a packet, or frames the decoder dropped): what decoded is the truth,
        # so sample again over it.
        warnings.append(
            f"the video stream has {n_frames} packets but {result.n_decoded} frames decoded: "
            f"sampling over the {result.n_decoded} decoded frames"
        )
        n_frames = result.n_decoded
        retargeted = sample_frame_indices(n_frames, num_frames)
        if not np.array_equal(retargeted, targets):
            targets = retargeted
            result = _decode_frames(path, stream_index, targets, None)
    if result.damage.packets:
        warnings.append(_video_damage_warning(result.damage))

    frames, kept = _frames_at(targets, result.frames)
    missing = sorted(set(targets.tolist()) - set(kept.tolist()))
    if missing:
        warnings.append(
            f"{len(missing)} of the {len(set(targets.tolist()))} sampled frames failed to decode and "
            f"were skipped (source indices {missing})"
        )
    return frames, kept, n_frames


@dataclass
class _DecodedFrames:
    frames: dict[int, av.VideoFrame]  # source index -> decoded frame, sampled indices only
    n_decoded: int
    damage: _Damage
    indexed_by_pts: bool


def _decode_frames(
    path: Path, stream_index: int, targets: np.ndarray, pts_table: list[int] | None
) -> _DecodedFrames:
    """Decode the whole video stream and keep the frames at the `targets` indices.

    A frame's index is its rank among the packets' timestamps when those are usable: a packet that
    fails to decode then leaves a hole instead of shifting every later frame. Some containers (AVI
    with B-frames) give frames timestamps that come out of order; there the index is the frame's
    position in decode output, which is presentation order. Both are tracked in one pass and the
    timestamps are used only if they stayed consistent to the end.
    """
    wanted = set(targets.tolist())
    rank = {p: i for i, p in enumerate(pts_table)} if pts_table is not None else None
    by_position: dict[int, av.VideoFrame] = {}
    by_pts: dict[int, av.VideoFrame] = {}
    pts_consistent = rank is not None
    last_rank = -1
    n_decoded = 0
    damage = _Damage()

    with _open(path) as container:
        stream = container.streams[stream_index]
        # Frame threads: 1.3x on 2 cores for 720p H.264, more with more cores. A price: a frame
        # thread's decode error is not raised, the frame just never comes out (a hole, reported
        # as a missing sampled frame).
        stream.codec_context.thread_type = "AUTO"
        for frame in _decode_stream(container, stream, damage):
            if n_decoded in wanted:
                by_position[n_decoded] = frame
            if pts_consistent:
                r = rank.get(frame.pts)
                if r is None or r <= last_rank:
                    pts_consistent = False
                else:
                    last_rank = r
                    if r in wanted:
                        by_pts[r] = frame
            n_decoded += 1
    return _DecodedFrames(
        frames=by_pts if pts_consistent else by_position,
        n_decoded=n_decoded,
        damage=damage,
        indexed_by_pts=pts_consistent,
    )


def _frames_at(targets: np.ndarray, decoded: dict[int, av.VideoFrame]) -> tuple[list[np.ndarray], np.ndarray]:
    """RGB arrays of the sampled frames that decoded, in sampling order. Each frame is converted
    once; a repeated index (a clip shorter than the sample count) gets its own copy so callers can
    modify frames in place without surprises."""
    rgb: dict[int, np.ndarray] = {}
    frames: list[np.ndarray] = []
    kept: list[int] = []
    for index in targets.tolist():
        if index not in decoded:
            continue
        if index in rgb:
            frames.append(rgb[index].copy())
        else:
            rgb[index] = decoded[index].to_ndarray(format="rgb24")
            frames.append(rgb[index])
        kept.append(index)
    return frames, np.asarray(kept, dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# Audio


def _video_audio(path: Path, sample_rate: int, warnings: list[str]) -> DecodedAudio | None:
    """The audio track of a video, or None (with a warning in `warnings`) when it has none or it is
    unusable. The track's own warnings stay in its `DecodedAudio.warnings` and are not copied into
    `warnings`: a caller that reports both lists (the request layer does) would report them twice."""
    with _open(path) as container:
        if not container.streams.audio:
            warnings.append(NO_AUDIO_WARNING)
            return None
        try:
            audio = _decode_audio_stream(container, container.streams.audio[0], sample_rate, path)
        except MediaError as exc:
            warnings.append(
                f"the audio track could not be used ({exc.message}): answering from the frames only"
            )
            return None
    return audio


def _decode_audio_stream(
    container: av.container.InputContainer, stream: av.stream.Stream, sample_rate: int, path: Path
) -> DecodedAudio:
    """Decode one audio stream to mono float32 at `sample_rate` (channels averaged), skipping damaged
    packets."""
    if stream.codec_context is None:
        raise MediaError(
            f"the audio codec of {path} is not supported (FFmpeg has no decoder for it)",
            hint="convert it, e.g. `ffmpeg -i in -ac 1 -ar 16000 out.wav`",
        )
    resampler = _MonoResampler(sample_rate)
    damage = _Damage()
    for frame in _decode_stream(container, stream, damage):
        resampler.push(frame)
    samples = resampler.finish()

    warnings = [_audio_damage_warning(damage)] if damage.packets else []
    if samples.size == 0:
        reason = (
            f"every packet failed to decode: {damage.first_error}"
            if damage.packets
            else "it holds no samples"
        )
        raise MediaError(
            f"the audio of {path} is empty ({reason})",
            hint="give a file with a non-empty, decodable audio track",
        )
    return DecodedAudio(samples=samples, sample_rate=sample_rate, warnings=warnings)


class _MonoResampler:
    """Resample decoded frames to float32 at one rate, average the channels, collect the samples.

    The channels are averaged in numpy rather than by asking FFmpeg for a mono layout: for float
    output FFmpeg's stereo downmix is 0.707 * (L + R), 3 dB louder than the (L + R) / 2 that the
    official loaders give (librosa averages; `ffmpeg -ac 1` to 16-bit PCM normalises its matrix),
    and log-mel features keep absolute level.

    An `av.AudioResampler` is set up from the first frame it sees and refuses frames of another
    format, layout or rate; streams can change those midway (HE-AAC, concatenated files), so a
    change flushes the current resampler and starts a new one.
    """

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._resampler: av.AudioResampler | None = None
        self._input: tuple[str, str, int] | None = None
        self._chunks: list[np.ndarray] = []

    def push(self, frame: av.AudioFrame) -> None:
        signature = (frame.format.name, frame.layout.name, frame.sample_rate)
        if signature != self._input:
            self._flush()
            self._resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=self.sample_rate)
            self._input = signature
        self._collect(self._resampler.resample(frame))

    def finish(self) -> np.ndarray:
        self._flush()
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._chunks).astype(np.float32, copy=False)

    def _flush(self) -> None:
        # The resampler holds back a few samples (filter delay); None drains them.
        if self._resampler is not None:
            self._collect(self._resampler.resample(None))
            self._resampler = None

    def _collect(self, frames: list[av.AudioFrame]) -> None:
        for frame in frames:
            planes = frame.to_ndarray()  # planar: (channels, n)
            self._chunks.append(planes[0] if planes.shape[0] == 1 else planes.mean(axis=0))


# --------------------------------------------------------------------------------------------------
# Packets: decoding around damage


@dataclass
class _Damage:
    """The packets of one stream that held data and still failed to decode: real damage."""

    packets: int = 0
    seconds: float = 0.0  # how long they last, summed over those whose container says so
    first_error: str | None = None

    def record(self, packet: av.Packet | None, exc: av.FFmpegError) -> None:
        self.packets += 1
        if packet is not None and packet.duration and packet.time_base:
            self.seconds += float(packet.duration * packet.time_base)
        self.first_error = self.first_error or _error_text(exc)


def _decode_stream(
    container: av.container.InputContainer, stream: av.stream.Stream, damage: _Damage
) -> Iterator[av.frame.Frame]:
    """Every frame of `stream` in decoder output order; a packet that fails to decode is skipped and
    recorded in `damage`.

    A packet without payload is not given to the decoder, so it is never damage. They are normal:
    Ogg stores zero-length packets (movie-hello.ogg has 5572 in its Vorbis stream, fifteen after each
    real one, and 7 in its Theora stream, where one means "the previous frame again"), and PyAV ends
    each demux with an empty packet meant to flush the decoder. FFmpeg refuses an empty packet that
    comes with a buffer, as demuxed ones do (`avcodec_send_packet`: EINVAL, "Invalid
    argument"), and the decoder never makes a frame of one; the ffmpeg command line skips them too.
    The decoder is drained once at the end instead.
    """
    for packet in container.demux(stream):
        if packet.size:
            yield from _decode_packet(stream, packet, damage)
    yield from _decode_packet(stream, None, damage)  # drain: the frames the decoder still holds


def _decode_packet(
    stream: av.stream.Stream, packet: av.Packet | None, damage: _Damage
) -> list[av.frame.Frame]:
    try:
        return stream.decode(packet)
    except av.FFmpegError as exc:
        damage.record(packet, exc)
        return []


def _video_damage_warning(damage: _Damage) -> str:
    """What damaged video packets mean for the answer: lost frames, and artifacts in the frames that
    depend on them."""
    return (
        f"skipped {_packets(damage.packets, 'video')} ({damage.first_error}): the frames in them are "
        "missing, and frames after them may show artifacts until the next keyframe"
    )


def _audio_damage_warning(damage: _Damage) -> str:
    """What damaged audio packets mean for the answer: a gap in the sound, as long as they were."""
    gap = f"about {damage.seconds:.3g} s of the sound" if damage.seconds else "part of the sound"
    return (
        f"skipped {_packets(damage.packets, 'audio')} ({damage.first_error}): {gap} is missing, "
        "the rest is heard"
    )


def _packets(n: int, kind: str) -> str:
    return f"{n} damaged {kind} packet" + ("" if n == 1 else "s")


def _error_text(exc: av.FFmpegError) -> str:
    return f"{type(exc).__name__}: {exc.strerror or exc}"
