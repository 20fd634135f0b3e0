"""A request, from files and a question to the arrays the stages need and the plan that joins them.

    decode (PyAV) -> preprocess (frames, log-mel) -> prompt text + tokens -> plan (TEG + CRTE coords)

Torch-free; used unchanged by the PyTorch reference and by the runtime, so both see the same frames,
the same mel chunks, the same token ids and the same timeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vinci_edge import metrics as m
from vinci_edge import timeline as tl
from vinci_edge import tokens
from vinci_edge.config import AUDIO_CHUNK_FRAMES, OmniVinciConfig
from vinci_edge.errors import PromptError
from vinci_edge.media import (
    decode_audio,
    decode_image,
    decode_video,
    dynamic_s2_tiles,
    log_mel_spectrogram,
    preprocess_frames,
    split_mel_chunks,
)
from vinci_edge.text.tokenizer import TextTokenizer


@dataclass
class ImageTiles:
    pixels: np.ndarray  # (tiles, 3, s, s) float32
    block_size: tuple[int, int] | None  # (rows, cols) of the last S2 scale; None = single tile
    n_tokens: int  # projected tokens this image contributes (before its end token)


@dataclass
class PreparedRequest:
    """Everything a backend needs to answer: stage inputs, token ids, the plan."""

    input_ids: list[int]
    plan: tl.Plan
    frames: np.ndarray | None  # (F, 3, s, s) float32, all videos' frames in prompt order
    mel_chunks: np.ndarray | None  # (C, n_mels, 3000) float32, all audio in prompt order
    images: list[ImageTiles]
    prompt_text: str
    warnings: list[str] = field(default_factory=list)
    media_info: list[dict[str, Any]] = field(default_factory=list)


def prompt_text(
    tokenizer: TextTokenizer,
    cfg: OmniVinciConfig,
    question: str,
    placeholders: str,
    system_prompt: str | None = None,
) -> tuple[str, list[str]]:
    """The chat-formatted prompt: media placeholders, then the question, as the official
    `extract_media` + `tokenize_conversation` write it."""
    warnings: list[str] = []
    for marker in tokens.MEDIA_TOKENS.values():
        if marker in question:
            # The official code removes stray media markers from user text; so do we, loudly.
            warnings.append(f"removed the media placeholder {marker!r} from the question text")
            question = question.replace(marker, "")
    content = (placeholders + question).strip()
    messages = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": content})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    if cfg.mm_use_bos_eos_tokens:
        for kind, (bos, eos) in tokens.MM_BOS_EOS_TOKENS.items():
            marker = tokens.MEDIA_TOKENS[kind]
            if marker in text:
                parts = text.split(marker)
                parts[0] += bos
                parts[-1] = eos + parts[-1]
                text = marker.join(parts)
    return text, warnings


def _image_tiles(image: np.ndarray, cfg: OmniVinciConfig, single: bool) -> ImageTiles:
    size = cfg.s2_scales[0]
    grid = cfg.tokens_per_frame
    if single and cfg.image_aspect_ratio == "dynamic_s2":
        tiles, block = dynamic_s2_tiles(image, cfg.s2_scales, cfg.max_tiles, size)
        rows, cols = block
        if cfg.s2_resize_output_to_scale_idx not in (-1, len(cfg.s2_scales) - 1):
            k = cfg.s2_scales[cfg.s2_resize_output_to_scale_idx] // cfg.s2_scales[0]
            rows, cols = k, k
        return ImageTiles(preprocess_frames(tiles, size), block, rows * cols * grid)
    return ImageTiles(preprocess_frames([image], size), None, grid)


def prepare_request(
    cfg: OmniVinciConfig,
    tokenizer: TextTokenizer,
    question: str,
    video: str | Path | None = None,
    audio: str | Path | None = None,
    image: str | Path | None = None,
    metrics: m.Metrics | None = None,
    system_prompt: str | None = None,
    num_frames: int | None = None,
) -> PreparedRequest:
    """Decode and preprocess the media, build the prompt and its plan.

    Media appear in the prompt in the order image, video, audio, then the question.
    """
    metrics = metrics or m.Metrics()
    warnings: list[str] = []
    info: list[dict[str, Any]] = []
    media: list[tl.MediaInput] = []
    frames_list: list[np.ndarray] = []
    audio_tracks: list[tuple[np.ndarray, tl.AudioTimeline]] = []
    images: list[ImageTiles] = []
    placeholders = ""
    n_frames = num_frames or cfg.num_video_frames

    with metrics.stage(m.MEDIA_DECODE):
        decoded_image = decode_image(image) if image is not None else None
        decoded_video = (
            decode_video(
                video, n_frames, load_audio=cfg.load_audio_in_video, sample_rate=cfg.audio_sampling_rate
            )
            if video is not None
            else None
        )
        decoded_audio = decode_audio(audio, cfg.audio_sampling_rate) if audio is not None else None

    with metrics.stage(m.FRAME_PREPROCESS):
        if decoded_image is not None:
            tiles = _image_tiles(decoded_image, cfg, single=True)
            images.append(tiles)
            media.append(tl.ImageInput(tiles.n_tokens))
            placeholders += tokens.IMAGE
            info.append(
                {
                    "kind": "image",
                    "path": str(image),
                    "tiles": int(tiles.pixels.shape[0]),
                    "block_size": tiles.block_size,
                    "tokens": tiles.n_tokens,
                }
            )
        if decoded_video is not None:
            dv = decoded_video
            warnings += [f"{video}: {w}" for w in dv.warnings]
            vt = tl.VideoTimeline(dv.frame_indices, dv.fps, dv.n_source_frames, dv.expected_frame_count)
            frames_list.append(preprocess_frames(dv.frames, cfg.s2_scales[0]))
            at = None
            if dv.audio is not None and dv.audio.samples.size > 0:
                at = tl.audio_timeline(dv.audio.samples.size, cfg)
                audio_tracks.append((dv.audio.samples, at))
                warnings += [f"{video} (audio): {w}" for w in dv.audio.warnings]
            media.append(tl.VideoInput(vt, at))
            placeholders += (tokens.SOUND if at is not None else "") + tokens.VIDEO
            info.append(
                {
                    "kind": "video",
                    "path": str(video),
                    "frames": vt.n_frames,
                    "fps": vt.fps,
                    "duration": vt.duration,
                    "frame_times": [round(t, 4) for t in vt.frame_times],
                    "audio_seconds": None if at is None else at.content_samples / at.sample_rate,
                }
            )
        if decoded_audio is not None:
            if decoded_audio.samples.size == 0:
                raise PromptError(f"{audio} holds no audio samples", hint="check the file plays")
            at = tl.audio_timeline(decoded_audio.samples.size, cfg)
            audio_tracks.append((decoded_audio.samples, at))
            warnings += [f"{audio}: {w}" for w in decoded_audio.warnings]
            media.append(tl.AudioInput(at))
            placeholders += tokens.SOUND
            info.append(
                {
                    "kind": "audio",
                    "path": str(audio),
                    "seconds": at.content_samples / at.sample_rate,
                    "tokens": at.n_tokens,
                }
            )
    if audio_tracks and not cfg.has_sound:
        raise PromptError("this checkpoint has no sound tower", hint="drop --audio or use a model with audio")

    with metrics.stage(m.LOG_MEL):
        mel_chunks = _mel_chunks(audio_tracks, cfg)

    with metrics.stage(m.TOKENIZE):
        text, w = prompt_text(tokenizer, cfg, question, placeholders, system_prompt)
        warnings += w
        input_ids = tokenizer.encode(text)
        marker_ids = {k: tokenizer.token_id(v) for k, v in tokens.MEDIA_TOKENS.items()}
        plan = tl.build_plan(input_ids, media, cfg, marker_ids, tokenizer.encode)

    return PreparedRequest(
        input_ids=input_ids,
        plan=plan,
        frames=np.concatenate(frames_list) if frames_list else None,
        mel_chunks=mel_chunks,
        images=images,
        prompt_text=text,
        warnings=warnings,
        media_info=info,
    )


def _mel_chunks(tracks: list[tuple[np.ndarray, tl.AudioTimeline]], cfg: OmniVinciConfig) -> np.ndarray | None:
    """Window each track (cap, pad to 30 s), log-mel it, cut it into 3000-frame encoder chunks."""
    chunks = []
    for samples, at in tracks:
        kept = samples[: at.content_samples]
        mel = log_mel_spectrogram(
            kept,
            at.padded_samples,
            n_mels=cfg.num_mel_bins,
            hop_length=cfg.audio_hop_length,
            sample_rate=cfg.audio_sampling_rate,
        )
        assert mel.shape[1] == at.n_stft_frames
        chunks.append(split_mel_chunks(mel, AUDIO_CHUNK_FRAMES))
    return np.concatenate(chunks) if chunks else None
