"""Torch-free media input: decoding (PyAV, Pillow), frame preprocessing and tiling, Whisper log-mel
features, and synthetic test media. Only numpy, PyAV and Pillow are imported here."""

from vinci_edge.media.decode import (
    NO_AUDIO_WARNING,
    DecodedAudio,
    DecodedVideo,
    decode_audio,
    decode_image,
    decode_video,
    probe,
)
from vinci_edge.media.frames import dynamic_s2_tiles, preprocess_frames
from vinci_edge.media.mel import log_mel_spectrogram, split_mel_chunks
from vinci_edge.media.synth import make_test_clip, make_test_wav, pattern_frame, read_frame_number

__all__ = [
    "NO_AUDIO_WARNING",
    "DecodedAudio",
    "DecodedVideo",
    "decode_audio",
    "decode_image",
    "decode_video",
    "dynamic_s2_tiles",
    "log_mel_spectrogram",
    "make_test_clip",
    "make_test_wav",
    "pattern_frame",
    "preprocess_frames",
    "probe",
    "read_frame_number",
    "split_mel_chunks",
]
