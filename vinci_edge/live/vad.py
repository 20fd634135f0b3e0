"""Voice activity: Silero VAD's ONNX model run with ONNX Runtime, torch-free.

`SileroVAD` reproduces the `silero-vad` package's `OnnxWrapper` exactly: 512-sample windows at
16 kHz, each fed with the last 64 samples of the previous input before it, the recurrent `state`
((2, 1, 128) float32) carried from window to window, and `sr` as an int64 scalar. The package itself
is never imported (its `__init__` imports torch): only its data file `data/silero_vad.onnx` is used.

`SpeechDetector` is the package's `VADIterator` made for a live stream: blocks of any length, each
stamped with its stream time, go in; finished speech segments (t0, t1) in stream seconds come out.
A segment starts at the first window whose probability reaches `threshold` and ends once the
probability has stayed below `threshold - 0.15` for `min_silence_ms`, both widened by
`speech_pad_ms`, as VADIterator computes them; only the time axis is the stream's.
"""

from __future__ import annotations

import bisect
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vinci_edge.errors import MissingDependencyError
from vinci_edge.live.packets import stamp
from vinci_edge.runtime.backend import import_onnxruntime

SAMPLE_RATE = 16000  # the model's rate here (it also takes 8 kHz; the session delivers 16 kHz)
WINDOW = 512  # samples per speech probability (32 ms)
CONTEXT = 64  # samples of the previous input fed again before each window
STATE_SHAPE = (2, 1, 128)
MODEL_FILE = "data/silero_vad.onnx"
PIP_HINT = "pip install --no-deps silero-vad==6.2.3 (only its ONNX model is used: no torch needed)"

NEG_THRESHOLD_GAP = 0.15  # in speech, a window ends it only below threshold - 0.15 (VADIterator)
RESYNC_S = 0.05  # a block stamped this far from where the samples before it end starts a new anchor
ANCHOR_HISTORY_S = 10.0  # how far back sample -> time anchors are kept (beyond the silence wait)


def silero_model_path() -> Path:
    """The ONNX model inside the installed `silero-vad` package, found without importing it."""
    spec = importlib.util.find_spec("silero_vad")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    what = "is not installed" if not folders else f"has no {MODEL_FILE}"
    raise MissingDependencyError(
        f"voice activity detection needs Silero VAD: silero-vad {what}", hint=PIP_HINT
    )


class SileroVAD:
    """Silero VAD's speech probability for consecutive 512-sample windows of 16 kHz audio."""

    def __init__(self, path: str | Path | None = None, threads: int = 1) -> None:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        model = Path(path) if path is not None else silero_model_path()
        self._session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget the audio seen so far (a new, unrelated stream follows)."""
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros((1, CONTEXT), dtype=np.float32)

    def __call__(self, window: np.ndarray) -> float:
        """The probability that this window (the next WINDOW samples of the stream) is speech."""
        samples = np.asarray(window, dtype=np.float32).reshape(1, -1)
        if samples.shape[1] != WINDOW:
            raise ValueError(f"a window is {WINDOW} samples at {SAMPLE_RATE} Hz, got {samples.shape[1]}")
        x = np.concatenate([self._context, samples], axis=1)
        out, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._context = x[:, -CONTEXT:]
        return float(out[0, 0])

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """One probability per window of a whole recording, from a fresh state; the last window
        is padded with zeros (as the package's `audio_forward` does)."""
        self.reset()
        audio = np.asarray(samples, dtype=np.float32).reshape(-1)
        audio = np.pad(audio, (0, -len(audio) % WINDOW))
        return np.array([self(audio[i : i + WINDOW]) for i in range(0, len(audio), WINDOW)], np.float32)


@dataclass(frozen=True)
class SpeechSegment:
    """Speech from stream time t0 to t1 (seconds, padded by the detector's speech_pad_ms)."""

    t0: float
    t1: float

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0


class _SampleClock:
    """Sample index -> stream time. Consecutive blocks continue the samples before them; a block
    stamped more than RESYNC_S away from that (a dropped block, a drifting device clock) starts a
    new anchor, so a gap moves the times after it and never the ones before."""

    def __init__(self) -> None:
        self._samples: list[int] = []  # anchor sample indices, increasing
        self._times: list[float] = []

    def place(self, n: int, t: float) -> None:
        """Block of samples starting at index `n` is stamped `t`."""
        if not self._samples or abs(self.time(n) - t) > RESYNC_S:
            self._samples.append(n)
            self._times.append(t)

    def time(self, n: float) -> float:
        k = max(bisect.bisect_right(self._samples, n) - 1, 0)
        return stamp(self._times[k] + (n - self._samples[k]) / SAMPLE_RATE)

    def forget_before(self, n: float) -> None:
        """Drop anchors no time before sample `n` will be asked of (the newest one stays)."""
        while len(self._samples) > 1 and self._samples[1] <= n:
            del self._samples[0], self._times[0]


class SpeechDetector:
    """Streaming speech segments from 16 kHz mono blocks of any length (VADIterator semantics).

    Not thread-safe: one thread feeds it (the speech trigger's worker).
    """

    def __init__(
        self,
        model: SileroVAD | None = None,
        threshold: float = 0.5,
        min_silence_ms: float = 100,
        speech_pad_ms: float = 30,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.model = model or SileroVAD()
        self.threshold = threshold
        self.neg_threshold = threshold - NEG_THRESHOLD_GAP
        self.min_silence_samples = SAMPLE_RATE * min_silence_ms / 1000
        self.speech_pad_samples = SAMPLE_RATE * speech_pad_ms / 1000
        self.reset()

    def reset(self) -> None:
        self.model.reset()
        self._clock = _SampleClock()
        self._pending = np.zeros(0, dtype=np.float32)
        self._received = 0  # samples fed so far
        self._current = 0  # samples run through the model (VADIterator's current_sample)
        self._triggered = False
        self._temp_end = 0  # where silence began in speech (the end of its first window), 0: none
        self._start: float | None = None  # stream time of the open segment's start

    @property
    def speaking(self) -> bool:
        """Inside a speech segment (it started and has not ended yet)."""
        return self._triggered

    @property
    def speech_start(self) -> float | None:
        """Stream time the open segment started at, None when not speaking."""
        return self._start if self._triggered else None

    def feed(self, t: float, samples: np.ndarray) -> list[SpeechSegment]:
        """Samples whose first one is at stream time `t`; returns the segments that ended in them."""
        block = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._clock.place(self._received, t)
        self._received += len(block)
        self._pending = np.concatenate([self._pending, block])
        ended = []
        while len(self._pending) >= WINDOW:
            window, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
            segment = self._step(window)
            if segment is not None:
                ended.append(segment)
        history = max(ANCHOR_HISTORY_S * SAMPLE_RATE, self.min_silence_samples + 2 * WINDOW)
        self._clock.forget_before(self._current - history)
        return ended

    def finish(self) -> list[SpeechSegment]:
        """The stream ended: run the samples short of a window (zero-padded, as `audio_forward`
        pads) and close a segment still open at the end of the audio, so speech that runs to the
        end of a file is reported too. The detector is then ready for a new stream."""
        ended = []
        if len(self._pending):
            segment = self._step(np.pad(self._pending, (0, WINDOW - len(self._pending))))
            if segment is not None:
                ended.append(segment)
        if self._triggered:
            end = self._temp_end + self.speech_pad_samples - WINDOW if self._temp_end else self._received
            ended.append(self._segment(min(end, self._received)))
        self.reset()
        return ended

    def _step(self, window: np.ndarray) -> SpeechSegment | None:
        """One window, as VADIterator.__call__: the segment it ends, if any."""
        self._current += WINDOW
        prob = self.model(window)
        if prob >= self.threshold and self._temp_end:
            self._temp_end = 0
        if prob >= self.threshold and not self._triggered:
            self._triggered = True
            self._start = self._clock.time(int(max(0, self._current - self.speech_pad_samples - WINDOW)))
            return None
        if prob < self.neg_threshold and self._triggered:
            if not self._temp_end:
                self._temp_end = self._current
            if self._current - self._temp_end < self.min_silence_samples:
                return None
            return self._segment(int(self._temp_end + self.speech_pad_samples - WINDOW))
        return None

    def _segment(self, end_sample: float) -> SpeechSegment:
        """Close the open segment at sample `end_sample`."""
        segment = SpeechSegment(self._start or 0.0, self._clock.time(end_sample))
        self._triggered, self._temp_end, self._start = False, 0, None
        return segment
