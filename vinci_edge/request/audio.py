"""Audio: a file (or a video's own track) -> log-mel windows -> the audio stage's rows.

The track is windowed the official way (at most `audio_chunk_length` seconds, zero-padded to a
multiple of 30 s), turned into a Whisper log-mel, and cut into 3000-frame windows; the audio stage
turns each window into `audio_tokens_per_chunk` rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vinci_edge import metrics as m
from vinci_edge import stages as st
from vinci_edge.config import AUDIO_CHUNK_FRAMES, OmniVinciConfig
from vinci_edge.errors import PromptError
from vinci_edge.kinds import Kind
from vinci_edge.media import decode_audio, log_mel_spectrogram, split_mel_chunks
from vinci_edge.request.chunks import AudioChunk, content_id, source_identity
from vinci_edge.request.modality import Context, Preprocessed
from vinci_edge.stages import Stages, run_batched
from vinci_edge.timeline import AudioTimeline, audio_timeline


class Audio:
    kind = Kind.AUDIO
    noun = "an audio file"  # in messages: "the request has an audio file"
    stages = (st.AUDIO,)

    def __init__(self, cfg: OmniVinciConfig) -> None:
        self.cfg = cfg

    def preprocess(self, source: Path, ctx: Context, metrics: m.Metrics) -> Preprocessed:
        with metrics.stage(m.MEDIA_DECODE):
            decoded = decode_audio(source, self.cfg.audio_sampling_rate)
        if decoded.samples.size == 0:
            raise PromptError(f"{source} holds no audio samples", hint="check the file plays")
        chunk = audio_chunk(decoded.samples, self.cfg, str(source), source_identity(source), ctx, metrics)
        at = chunk.timeline
        info = {
            "kind": "audio",
            "path": str(source),
            "seconds": at.content_samples / at.sample_rate,
            "tokens": at.n_tokens,
        }
        return Preprocessed([chunk], info, [f"{source}: {w}" for w in decoded.warnings])

    def encode(self, chunk: AudioChunk, stages: Stages, metrics: m.Metrics) -> np.ndarray:
        with metrics.stage(m.AUDIO, chunks=int(chunk.mel.shape[0])) as attrs:
            runner = stages[st.AUDIO]
            attrs["provider"] = runner.provider
            tokens = run_batched(runner, "mel", chunk.mel, "tokens")
        return tokens.reshape(-1, tokens.shape[-1])[: chunk.timeline.n_tokens]


def audio_chunk(
    samples: np.ndarray,
    cfg: OmniVinciConfig,
    source: str,
    identity: str,
    ctx: Context,
    metrics: m.Metrics,
    start_sec: float = 0.0,
    trimmed: bool = False,
) -> AudioChunk:
    """Samples at the model's rate (a file's, a video's own track, a live chunk) -> one audio chunk;
    `trimmed`: only the tokens of real samples go into the prompt (`AudioTimeline.trimmed`)."""
    if not cfg.has_sound:
        raise PromptError("this checkpoint has no sound tower", hint="drop --audio or use a model with audio")
    at = audio_timeline(samples.size, cfg, start_sec, trimmed)
    with metrics.stage(m.LOG_MEL):
        mel = mel_windows(samples, at, cfg)
    extent = {
        "start": start_sec,
        "samples": at.content_samples,
        "hop": at.hop_length,
        "mels": cfg.num_mel_bins,
        "trimmed": trimmed,
    }
    return AudioChunk(
        content_id(Kind.AUDIO, identity, extent, ctx.encoder_fingerprint(Kind.AUDIO)), source, mel, at
    )


def mel_windows(samples: np.ndarray, at: AudioTimeline, cfg: OmniVinciConfig) -> np.ndarray:
    """(C, n_mels, 3000): the kept samples' log-mel, padded to the window, cut into encoder windows."""
    mel = log_mel_spectrogram(
        samples[: at.content_samples],
        at.padded_samples,
        n_mels=cfg.num_mel_bins,
        hop_length=cfg.audio_hop_length,
        sample_rate=cfg.audio_sampling_rate,
    )
    assert mel.shape[1] == at.n_stft_frames
    return split_mel_chunks(mel, AUDIO_CHUNK_FRAMES)
