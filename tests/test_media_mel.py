"""Whisper log-mel features against transformers' WhisperFeatureExtractor, and chunking.

With torch installed the extractor computes in float32 torch (the path the official code takes); its
numpy path computes in float64 but stores the spectrum as complex64. Both are compared: ours (float64
throughout) is within ~3e-5 of the torch path and ~1e-7 of the numpy path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vinci_edge.media import decode_audio, log_mel_spectrogram, make_test_wav, split_mel_chunks

transformers = pytest.importorskip("transformers")
from transformers.audio_utils import mel_filter_bank  # noqa: E402

FRONT_CENTER = Path("/usr/share/sounds/alsa/Front_Center.wav")
SR = 16000


def extractor(hop: int, seconds: int, n_mels: int = 128):
    return transformers.WhisperFeatureExtractor(
        feature_size=n_mels, sampling_rate=SR, hop_length=hop, chunk_length=seconds, n_fft=400
    )


def reference(samples: np.ndarray, hop: int, seconds: int, n_mels: int = 128) -> np.ndarray:
    features = extractor(hop, seconds, n_mels)(
        samples, sampling_rate=SR, padding="max_length", return_tensors="np"
    )
    return features["input_features"][0]


def reference_numpy_path(samples: np.ndarray, hop: int, seconds: int) -> np.ndarray:
    padded = np.zeros(seconds * SR, np.float32)
    padded[: min(samples.size, padded.size)] = samples[: padded.size]
    return extractor(hop, seconds)._np_extract_fbank_features(padded[None], "cpu")[0]


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    if FRONT_CENTER.exists():
        return decode_audio(FRONT_CENTER).samples  # 48 kHz speech resampled to 16 kHz
    pytest.skip(f"{FRONT_CENTER} not installed (alsa-utils sounds)")


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(SR * 12) * 0.1).astype(np.float32)


def test_mel_filters_are_identical_to_transformers():
    from vinci_edge.media.mel import _mel_filters

    for n_mels in (80, 128):
        expected = mel_filter_bank(
            num_frequency_bins=201,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=8000.0,
            sampling_rate=SR,
            norm="slaney",
            mel_scale="slaney",
        )
        np.testing.assert_array_equal(_mel_filters(n_mels, 400, SR), expected)


@pytest.mark.parametrize("hop", [160, 60])
@pytest.mark.parametrize("signal", ["speech", "noise"])
def test_log_mel_matches_whisper_feature_extractor(request, hop, signal):
    samples = request.getfixturevalue(signal)
    got = log_mel_spectrogram(samples, 30 * SR, n_mels=128, hop_length=hop)

    expected = reference(samples, hop, 30)
    assert got.shape == expected.shape == (128, 30 * SR // hop)
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() < 1e-4  # float32 torch STFT vs our float64: ~3e-5 at worst
    assert np.abs(got - reference_numpy_path(samples, hop, 30)).max() < 1e-6


def test_log_mel_longer_window_and_80_bins(speech):
    # 60 s window (the extractor's chunk_length=60), 80 mel bins.
    got = log_mel_spectrogram(speech, 60 * SR, n_mels=80, hop_length=160)
    expected = reference(speech, 160, 60, n_mels=80)
    assert got.shape == (80, 6000)
    assert np.abs(got - expected).max() < 2e-5


def test_log_mel_truncates_long_input(noise):
    got = log_mel_spectrogram(noise, 5 * SR)
    assert got.shape == (128, 500)
    np.testing.assert_allclose(got, reference(noise[: 5 * SR], 160, 5), atol=2e-5)
    np.testing.assert_array_equal(got, log_mel_spectrogram(noise[: 5 * SR], 5 * SR))


def test_log_mel_of_a_tone_peaks_at_its_band(tmp_path):
    samples = decode_audio(make_test_wav(tmp_path / "t.wav", seconds=2.0, tone_hz=1000.0)).samples
    mel = log_mel_spectrogram(samples, 30 * SR)
    band_energy = mel[:, 10:190].mean(axis=1)  # frames inside the tone
    centres = (
        mel_filter_bank(201, 128, 0.0, 8000.0, SR, norm="slaney", mel_scale="slaney").argmax(axis=0) * 40
    )
    assert abs(centres[band_energy.argmax()] - 1000) <= 80
    # After the tone ends the features sit at the floor, 8 log10 units under the maximum: 2 after
    # the final (x + 4) / 4.
    assert mel[:, 300:].max() == pytest.approx(mel.max() - 2.0, abs=1e-6)


def test_log_mel_rejects_a_window_too_short_for_padding():
    with pytest.raises(ValueError, match="reflect"):
        log_mel_spectrogram(np.zeros(10, np.float32), 100)


# --------------------------------------------------------------------------------------------------


def test_split_mel_chunks_pads_the_last_chunk():
    mel = np.arange(4 * 7000, dtype=np.float32).reshape(4, 7000) + 1
    chunks = split_mel_chunks(mel, 3000)
    assert chunks.shape == (3, 4, 3000) and chunks.dtype == np.float32
    np.testing.assert_array_equal(chunks[0], mel[:, :3000])
    np.testing.assert_array_equal(chunks[1], mel[:, 3000:6000])
    np.testing.assert_array_equal(chunks[2, :, :1000], mel[:, 6000:])
    assert not chunks[2, :, 1000:].any()


def test_split_mel_chunks_exact_multiple_and_short():
    mel = np.ones((2, 6000), np.float32)
    assert split_mel_chunks(mel).shape == (2, 2, 3000) and split_mel_chunks(mel).all()
    short = split_mel_chunks(np.ones((2, 10), np.float32), 3000)
    assert short.shape == (1, 2, 3000) and short.sum() == 20
