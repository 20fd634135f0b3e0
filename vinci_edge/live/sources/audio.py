"""Audio as live sources deliver it: mono float32 at the model's rate, cut into equal blocks.

The samples are the ones `vinci_edge.media.decode.decode_audio` gives for the same track: decoded
frames are resampled to float32 at the target rate in their own channel layout and the channels are
averaged (FFmpeg's own stereo-to-mono downmix is 3 dB louder than the average the official loaders
take, and log-mel features keep absolute level). So a file played through a source and the same file
decoded whole hold the same samples, and concatenating a source's blocks reproduces the track.
"""

from __future__ import annotations

import av
import numpy as np

SAMPLE_RATE = 16000  # what the audio tower takes
BLOCK_SECONDS = 0.2  # how much audio one block holds: short for latency, long enough to be cheap


class MonoResampler:
    """Decoded audio frames in, mono float32 samples at `rate` out, as they come.

    An `av.AudioResampler` is set up from the first frame it sees and refuses frames of another
    format, layout or rate; a stream can change those midway (HE-AAC, a reconnect), so a change
    drains the current resampler and starts a new one.
    """

    def __init__(self, rate: int = SAMPLE_RATE) -> None:
        self.rate = rate
        self._resampler: av.AudioResampler | None = None
        self._input: tuple[str, str, int] | None = None

    def push(self, frame: av.AudioFrame) -> np.ndarray:
        """The samples that `frame` completes (the resampler may hold a few back)."""
        signature = (frame.format.name, frame.layout.name, frame.sample_rate)
        drained = self.flush() if signature != self._input else _EMPTY
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=self.rate)
            self._input = signature
        return _join([drained, _mono(self._resampler.resample(frame))])

    def flush(self) -> np.ndarray:
        """The samples the resampler still holds (its filter delay); the next frame starts afresh."""
        if self._resampler is None:
            return _EMPTY
        samples = _mono(self._resampler.resample(None))
        self._resampler = None
        self._input = None
        return samples


def frame_from_samples(samples: np.ndarray, rate: int) -> av.AudioFrame:
    """A mono float32 block captured at `rate` as a frame `MonoResampler` takes (a microphone that
    cannot record at 16 kHz records at its own rate and is resampled like a file)."""
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples, dtype=np.float32)[None, :], format="flt", layout="mono"
    )
    frame.sample_rate = rate
    return frame


class AudioBlocks:
    """Cuts a run of samples into blocks of `size` samples, each with its start in samples.

    A block's start counts every sample before it, so `start / rate` is where it lies in the run and
    the blocks, concatenated, are the run itself.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a block holds at least one sample, got {size}")
        self.size = size
        self.emitted = 0  # samples handed out in blocks so far
        self._held: list[np.ndarray] = []
        self._n_held = 0

    def push(self, samples: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """The blocks `samples` completes: (start, samples) pairs."""
        if samples.size:
            self._held.append(samples)
            self._n_held += samples.size
        blocks = []
        if self._n_held >= self.size:
            run = _join(self._held)
            n_whole = run.size // self.size * self.size
            blocks = [self._take(run[i : i + self.size]) for i in range(0, n_whole, self.size)]
            self._held = [run[n_whole:]] if n_whole < run.size else []
            self._n_held = run.size - n_whole
        return blocks

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """The last, shorter block, if samples are held."""
        if not self._n_held:
            return []
        block = self._take(_join(self._held))
        self._held, self._n_held = [], 0
        return [block]

    @property
    def held(self) -> int:
        """Samples waiting for their block to fill."""
        return self._n_held

    def _take(self, samples: np.ndarray) -> tuple[int, np.ndarray]:
        start = self.emitted
        self.emitted += samples.size
        return start, np.array(samples, dtype=np.float32)  # a copy: the caller may reuse its buffer


_EMPTY = np.zeros(0, dtype=np.float32)


def _mono(frames: list[av.AudioFrame]) -> np.ndarray:
    """Planar float frames averaged over their channels, concatenated."""
    chunks = []
    for frame in frames:
        planes = frame.to_ndarray()  # planar: (channels, n)
        chunks.append(planes[0] if planes.shape[0] == 1 else planes.mean(axis=0))
    return _join(chunks)


def _join(chunks: list[np.ndarray]) -> np.ndarray:
    chunks = [c for c in chunks if c.size]
    if not chunks:
        return _EMPTY
    return chunks[0].astype(np.float32, copy=False) if len(chunks) == 1 else np.concatenate(chunks)
