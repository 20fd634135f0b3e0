"""A microphone as a live source, through sounddevice (PortAudio): mono float32 at 16 kHz.

PortAudio calls back from its own thread with each block; the callback only copies the block and
notes its arrival on the stream clock. Blocks are stamped by the sample count mapped onto the stream
clock (see `timeline`): a sound card's sample clock is steadier than callback times, and PortAudio's
`inputBufferAdcTime` is 0 on some ALSA devices. A device that cannot record at 16 kHz records at its
own rate and is resampled. A microphone that stops calling back (unplugged) is LOST and reopened.

Without the sounddevice package, the PortAudio library or an input device, the constructor raises a
PromptError that says which: the session can then go on with video only.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from vinci_edge.errors import PromptError
from vinci_edge.live.packets import Sink, StreamClock
from vinci_edge.live.sources.audio import SAMPLE_RATE, AudioBlocks, MonoResampler, frame_from_samples
from vinci_edge.live.sources.live import Audio, ConnectionFailed, Item, LiveRunner, Retry
from vinci_edge.live.sources.timeline import LiveTimeline

STALL_SECONDS = 2.0  # a microphone silent this long (no callback at all) is lost


class MicrophoneSource:
    """Sound from an input device (`device`: its index or part of its name; None: the default)."""

    realtime = True
    video = False
    audio = True

    def __init__(
        self, device: int | str | None = None, block_seconds: float = 0.1, *, retry: Retry | None = None
    ) -> None:
        self._sd = load_sounddevice()
        device = int(device) if isinstance(device, str) and device.isdigit() else device
        info = _input_device(self._sd, device)
        self.device = device
        self.name = f"microphone ({info['name']})"
        native = _records_at(self._sd, device, SAMPLE_RATE)
        self.rate = SAMPLE_RATE if native else int(info["default_samplerate"])  # else resampled
        self.block_seconds = block_seconds
        self.overflows = 0  # blocks in which the sound card dropped samples (the reader fell behind)
        self._timeline = LiveTimeline()
        self._runner = LiveRunner(self.name, self._connect, retry or Retry())

    def run(self, clock: StreamClock, sink: Sink, stop: threading.Event) -> None:
        self._runner.run(clock, sink, stop)

    def _connect(self, clock: StreamClock, stop: threading.Event) -> _MicConnection:
        return _MicConnection(self, clock, stop)


class _MicConnection:
    """An open input stream; the iterator gives 16 kHz blocks until the device falls silent."""

    def __init__(self, source: MicrophoneSource, clock: StreamClock, stop: threading.Event) -> None:
        self.source, self.clock, self.stop = source, clock, stop
        self.blocks: queue.Queue[tuple[float, np.ndarray]] = queue.Queue()
        self.stream: Any = None

    def __enter__(self) -> Iterator[Item]:
        source, sd = self.source, self.source._sd
        try:
            self.stream = sd.InputStream(
                device=source.device,
                samplerate=source.rate,
                channels=1,
                dtype="float32",
                blocksize=max(1, round(source.block_seconds * source.rate)),
                callback=self._callback,
            )
            self.stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise ConnectionFailed(f"the microphone cannot be opened ({exc})") from exc
        source._timeline.restart()
        return self._items()

    def __exit__(self, *exc: object) -> None:
        if self.stream is not None:
            # a device already gone cannot be closed cleanly: nothing to do about it
            with contextlib.suppress(Exception):
                self.stream.close()

    def _callback(self, indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        if status.input_overflow:
            self.source.overflows += 1
        self.blocks.put((self.clock.now(), indata[:, 0].copy()))

    def _items(self) -> Iterator[Item]:
        rate = self.source.rate
        resampler = MonoResampler(SAMPLE_RATE) if rate != SAMPLE_RATE else None
        blocks = AudioBlocks(max(1, round(self.source.block_seconds * SAMPLE_RATE)))
        while not self.stop.is_set():
            try:
                arrival, samples = self.blocks.get(timeout=STALL_SECONDS)
            except queue.Empty:
                raise ConnectionFailed("the microphone stopped delivering sound") from None
            if resampler is not None:
                samples = resampler.push(frame_from_samples(samples, rate))
            for start, block in blocks.push(samples):
                duration = block.size / SAMPLE_RATE
                yield Audio(self.source._timeline.at(start / SAMPLE_RATE, arrival, duration), block)


def load_sounddevice() -> Any:
    """The sounddevice module, or a PromptError saying what to install."""
    try:
        import sounddevice
    except ImportError:
        raise PromptError(
            "no microphone: the sounddevice package is not installed",
            hint="pip install sounddevice (it needs the PortAudio library: apt-get install libportaudio2)",
        ) from None
    except OSError:  # sounddevice raises it on import when libportaudio is missing
        raise PromptError(
            "no microphone: the PortAudio library is not installed",
            hint="install it: sudo apt-get install libportaudio2",
        ) from None
    return sounddevice


def _input_device(sd: Any, device: int | str | None) -> dict[str, Any]:
    """The input device's description, or a PromptError naming the ones there are."""
    try:
        return sd.query_devices(device, kind="input")
    except (ValueError, sd.PortAudioError):
        pass
    inputs = [f"{d['index']}: {d['name']}" for d in sd.query_devices() if d["max_input_channels"] > 0]
    what = "no input device" if device is None else f"no input device {device!r}"
    if inputs:
        hint = "input devices here: " + ", ".join(inputs)
    else:
        hint = "no sound card records here: plug a microphone in (in a container, pass --device /dev/snd)"
    raise PromptError(f"no microphone: {what}", hint=hint)


def _records_at(sd: Any, device: int | str | None, rate: int) -> bool:
    try:
        sd.check_input_settings(device, samplerate=rate, channels=1, dtype="float32")
    except (ValueError, sd.PortAudioError):
        return False
    return True
