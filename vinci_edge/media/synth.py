"""Deterministic synthetic media: a small MP4 with a moving pattern and a tone, and a WAV tone.

For tests and for the quickstart where no sample media is installed. Each video frame carries its own
frame number as a row of black/white blocks (`read_frame_number` reads it back), so a test can check
that the frame decoded at index k really is the k-th frame of the stream.
"""

from __future__ import annotations

import os
import wave
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# The frame-number code: FRAME_BITS blocks across the top quarter of the frame, most significant bit
# first. Blocks are at least 8 px wide so lossy compression cannot flip them.
FRAME_BITS = 10
MAX_FRAMES = 2**FRAME_BITS - 1
_AMPLITUDE = 0.3


def make_test_clip(
    path: str | os.PathLike,
    seconds: float = 4.0,
    fps: int = 10,
    size: tuple[int, int] = (160, 120),
    sample_rate: int = 16000,
    audio: bool = True,
    tone_hz: float = 440.0,
    channels: int = 1,
) -> Path:
    """Write an MP4 (H.264 if PyAV has libx264, else MPEG-4 Part 2) of `round(seconds * fps)` frames
    of `size` (width, height), with an AAC tone track of `channels` channels when `audio`."""
    path = Path(path)
    width, height = size
    n_frames = round(seconds * fps)
    if not 1 <= n_frames <= MAX_FRAMES:
        raise ValueError(f"a test clip holds 1..{MAX_FRAMES} frames, got {n_frames}")
    if width % 2 or height % 2 or width < 8 * FRAME_BITS or height < 16:
        raise ValueError(f"size must be even and at least {8 * FRAME_BITS}x16, got {size}")
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")

    frames = (pattern_frame(k, n_frames, width, height) for k in range(n_frames))
    samples = _tone(seconds, sample_rate, tone_hz) if audio else None
    return write_clip(path, frames, fps, (width, height), samples, sample_rate, channels)


def write_clip(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: int,
    size: tuple[int, int],
    samples: np.ndarray | None,
    sample_rate: int = 16000,
    channels: int = 1,
) -> Path:
    """Write RGB uint8 frames of `size` (width, height) at `fps` and, when given, float mono
    `samples` as an MP4: H.264 (MPEG-4 Part 2 without libx264) + AAC, the two streams interleaved in
    time. Byte-identical from run to run."""
    path = Path(path)
    width, height = size
    with av.open(str(path), mode="w", format="mp4") as container:
        video = _add_video_stream(container, fps, width, height)
        sound = _add_audio_stream(container, sample_rate, channels) if samples is not None else None
        audio_written = 0
        k = -1
        for k, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = k
            container.mux(video.encode(frame))
            if sound is not None:
                # Keep the two streams interleaved in time: audio up to the end of this frame.
                until = min(len(samples), round((k + 1) * sample_rate / fps))
                if until > audio_written:
                    chunk = _audio_frame(samples, audio_written, until, sample_rate, channels)
                    container.mux(sound.encode(chunk))
                    audio_written = until
        container.mux(video.encode(None))
        if sound is not None:
            if audio_written < len(samples):
                container.mux(
                    sound.encode(_audio_frame(samples, audio_written, len(samples), sample_rate, channels))
                )
            container.mux(sound.encode(None))
    return path


def make_test_wav(
    path: str | os.PathLike, seconds: float, sample_rate: int = 16000, tone_hz: float = 440.0
) -> Path:
    """Write a mono 16-bit PCM WAV of a `tone_hz` tone (with a slow amplitude swell)."""
    path = Path(path)
    samples = _tone(seconds, sample_rate, tone_hz)
    pcm = np.round(samples * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return path


def pattern_frame(k: int, n_frames: int, width: int, height: int) -> np.ndarray:
    """Frame k of a clip: its number in binary across the top, a vertical white bar moving left to
    right over the clip, and a background whose colour cycles with k. RGB uint8 (height, width, 3)."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    hue = 2 * np.pi * k / max(n_frames, 1)
    image[:] = (127 + 100 * np.cos([hue, hue + 2.1, hue + 4.2])).astype(np.uint8)

    band = height // 4
    block = width // FRAME_BITS
    for bit in range(FRAME_BITS):
        on = (k >> (FRAME_BITS - 1 - bit)) & 1
        image[:band, bit * block : (bit + 1) * block] = 255 if on else 0

    bar = max(2, width // 16)
    x = round((width - bar) * k / max(n_frames - 1, 1))
    image[band:, x : x + bar] = 255
    return image


def read_frame_number(frame: np.ndarray) -> int:
    """The frame number that `pattern_frame` wrote into a (decoded) frame."""
    height, width = frame.shape[:2]
    band = height // 4
    block = width // FRAME_BITS
    number = 0
    for bit in range(FRAME_BITS):
        # The block's centre only: compression blurs the edges between blocks.
        patch = frame[band // 4 : 3 * band // 4, bit * block + block // 4 : (bit + 1) * block - block // 4]
        number = (number << 1) | int(patch.mean() > 127)
    return number


# --------------------------------------------------------------------------------------------------


def _add_video_stream(container: av.container.OutputContainer, fps: int, width: int, height: int):
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.time_base = Fraction(1, fps)
    if codec == "libx264":
        # B-frames on purpose: decoding must put frames back in presentation order. One thread so
        # the bitstream is byte-identical from run to run.
        stream.options = {"preset": "veryfast", "crf": "18", "bf": "2", "threads": "1"}
    return stream


def _add_audio_stream(container: av.container.OutputContainer, sample_rate: int, channels: int):
    stream = container.add_stream("aac", rate=sample_rate)
    stream.layout = "mono" if channels == 1 else "stereo"
    stream.time_base = Fraction(1, sample_rate)
    return stream


def _tone(seconds: float, sample_rate: int, tone_hz: float) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    swell = 0.75 + 0.25 * np.sin(2 * np.pi * 0.5 * t)  # so that loudness, too, changes over time
    return (_AMPLITUDE * swell * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)


def _audio_frame(samples: np.ndarray, start: int, end: int, sample_rate: int, channels: int) -> av.AudioFrame:
    planes = np.repeat(samples[None, start:end], channels, axis=0)  # fltp: one row per channel
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(planes), format="fltp", layout="mono" if channels == 1 else "stereo"
    )
    frame.sample_rate = sample_rate
    frame.pts = start
    return frame
