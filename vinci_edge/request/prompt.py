"""A question and its media -> the prompt: chunks, token ids and the plan that joins them.

    each medium's preprocess (decode, frames / log-mel / tiles) -> media chunks
    chat template with the chunks' placeholders -> token ids
    token ids cut at the placeholders -> text chunks and media chunks, in prompt order
    the chunks laid out -> the plan (TEG + CRTE coordinates, `vinci_edge.plan`)

Torch-free; the PyTorch reference and the runtime both build their prompts here, so they see the
same frames, the same mel windows, the same token ids and the same plan.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vinci_edge import metrics as m
from vinci_edge import tokens
from vinci_edge.config import OmniVinciConfig
from vinci_edge.errors import PromptError
from vinci_edge.kinds import Kind
from vinci_edge.plan import Plan, layout
from vinci_edge.request.chunks import AudioChunk, Chunk, ImageChunk, MediaChunk, TextChunk, VideoChunk
from vinci_edge.request.chunks import encoded_chunks as _encoded
from vinci_edge.request.modalities import modalities_for
from vinci_edge.request.modality import Context, Modality, markers, placeholders
from vinci_edge.text.tokenizer import TextTokenizer


@dataclass
class Prompt:
    """Everything a backend needs to answer: the chunks, their plan, the token ids."""

    chunks: list[Chunk]  # in prompt order
    plan: Plan  # run i of the plan belongs to chunk `run.item`
    input_ids: list[int]
    prompt_text: str
    warnings: list[str] = field(default_factory=list)
    media_info: list[dict[str, Any]] = field(default_factory=list)

    @property
    def encoded_chunks(self) -> list[MediaChunk]:
        """The chunks an encoder runs on, in bank order."""
        return _encoded(self.chunks)

    # The stage inputs of all media of one kind, in prompt order (calibration and accuracy tools).
    @property
    def frames(self) -> np.ndarray | None:
        return _stacked([c.pixels for c in self.encoded_chunks if isinstance(c, VideoChunk)])

    @property
    def mel_chunks(self) -> np.ndarray | None:
        return _stacked([c.mel for c in self.encoded_chunks if isinstance(c, AudioChunk)])

    @property
    def images(self) -> list[ImageChunk]:
        return [c for c in self.encoded_chunks if isinstance(c, ImageChunk)]


def _stacked(arrays: list[np.ndarray]) -> np.ndarray | None:
    return np.concatenate(arrays) if arrays else None


class PromptBuilder:
    """Builds the prompts of one model: `build(question, metrics, video=..., audio=..., image=...)`."""

    def __init__(self, cfg: OmniVinciConfig, tokenizer: TextTokenizer, encoders: str = "") -> None:
        """`encoders`: the fingerprint of the encoders that will run on the chunks (content ids)."""
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.encoders = encoders
        self.modalities: dict[Kind, Modality] = modalities_for(cfg)

    def build(
        self,
        question: str,
        metrics: m.Metrics,
        video: str | os.PathLike[str] | None = None,
        audio: str | os.PathLike[str] | None = None,
        image: str | os.PathLike[str] | None = None,
        num_frames: int | None = None,
        system_prompt: str | None = None,
    ) -> Prompt:
        """Media appear in the prompt in the order of `modalities_for` (image, video, audio), then the
        question."""
        sources = {Kind.VIDEO: video, Kind.AUDIO: audio, Kind.IMAGE: image}
        ctx = Context(self.encoders, num_frames)
        media: list[MediaChunk] = []
        info: list[dict[str, Any]] = []
        warnings: list[str] = []
        for kind, modality in self.modalities.items():
            if sources.get(kind) is not None:
                done = modality.preprocess(sources[kind], ctx, metrics)
                media += done.chunks
                info.append(done.info)
                warnings += done.warnings
        prompt = self.from_media(question, media, metrics, system_prompt)
        prompt.warnings[:0] = warnings
        prompt.media_info = info
        return prompt

    def from_media(
        self,
        question: str,
        media: Sequence[MediaChunk],
        metrics: m.Metrics | None = None,
        system_prompt: str | None = None,
    ) -> Prompt:
        """The prompt of a question about media chunks already preprocessed (`build` after its
        preprocessing; training on media made in memory)."""
        with (metrics or m.Metrics()).stage(m.TOKENIZE):
            text, cleaned = prompt_text(
                self.tokenizer, self.cfg, question, "".join(placeholders(c) for c in media), system_prompt
            )
            input_ids = self.tokenizer.encode(text)
            chunks = split_at_placeholders(input_ids, media, self.marker_ids())
            plan = layout([c.item() for c in chunks], self.cfg, self.tokenizer.encode)
        return Prompt(chunks, plan, input_ids, text, cleaned)

    def from_chunks(self, chunks: Sequence[Chunk]) -> Prompt:
        """The prompt of chunks given as they are (a live session's window and question): laid out,
        nothing decoded or tokenized again."""
        chunks = list(chunks)
        plan = layout([c.item() for c in chunks], self.cfg, self.tokenizer.encode)
        ids = [i for c in chunks if isinstance(c, TextChunk) for i in c.ids]
        return Prompt(chunks, plan, ids, self.tokenizer.decode(ids, skip_special_tokens=False))

    def turn_parts(self, question: str, system_prompt: str | None = None) -> tuple[TextChunk, TextChunk]:
        """A one-turn prompt about media, as the text before the media (chat template head, with the
        system prompt) and the text after it (the question and the assistant's cue). A live session
        appends the head once, its media as they come, and the tail per question."""
        text, _ = prompt_text(
            self.tokenizer, self.cfg, question, tokens.MEDIA_TOKENS[Kind.VIDEO], system_prompt
        )
        ids = self.tokenizer.encode(text)
        cut = ids.index(self.marker_ids()[Kind.VIDEO])
        return TextChunk(tuple(ids[:cut])), TextChunk(tuple(ids[cut + 1 :]))

    def turn_break(self) -> TextChunk:
        """What closes an assistant's answer and opens the next user turn (a kept conversation)."""
        a, b = "\u2063A\u2063", "\u2063B\u2063"
        text = self.tokenizer.apply_chat_template(
            [
                {"role": "user", "content": a},
                {"role": "assistant", "content": a},
                {"role": "user", "content": b},
            ],
            add_generation_prompt=False,
        )
        between = text[text.index(a, text.index(a) + len(a)) + len(a) : text.index(b)]
        return TextChunk(tuple(self.tokenizer.encode(between)))

    def marker_ids(self) -> dict[Kind, int]:
        return {k: self.tokenizer.token_id(v) for k, v in tokens.MEDIA_TOKENS.items()}


def prompt_text(
    tokenizer: TextTokenizer,
    cfg: OmniVinciConfig,
    question: str,
    placeholder_text: str,
    system_prompt: str | None = None,
) -> tuple[str, list[str]]:
    """The chat-formatted prompt - media placeholders, then the question - as the official
    `extract_media` + `tokenize_conversation` write it; and the warnings of cleaning the question."""
    warnings: list[str] = []
    for marker in tokens.MEDIA_TOKENS.values():
        if marker in question:
            # The official code removes stray media markers from user text; so do we, loudly.
            warnings.append(f"removed the media placeholder {marker!r} from the question text")
            question = question.replace(marker, "")
    messages = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": (placeholder_text + question).strip()})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    if cfg.mm_use_bos_eos_tokens:
        text = _wrap_placeholders(text)
    return text, warnings


def _wrap_placeholders(text: str) -> str:
    """Each kind's begin token before its first placeholder, its end token after its last one."""
    for kind, (bos, eos) in tokens.MM_BOS_EOS_TOKENS.items():
        marker = tokens.MEDIA_TOKENS[kind]
        if marker in text:
            parts = text.split(marker)
            parts[0] += bos
            parts[-1] = eos + parts[-1]
            text = marker.join(parts)
    return text


def split_at_placeholders(
    input_ids: Sequence[int], media: Sequence[MediaChunk], marker_ids: dict[Kind, int]
) -> list[Chunk]:
    """The prompt's chunks: the token ids between placeholders as text chunks, each media chunk at
    its last placeholder (a TEG video's `<sound>` takes no positions of its own)."""
    kind_of = {v: k for k, v in marker_ids.items()}
    found = [(i, kind_of[t]) for i, t in enumerate(input_ids) if t in kind_of]
    expected = [(k, c if j == len(markers(c)) - 1 else None) for c in media for j, k in enumerate(markers(c))]
    if [k for _, k in found] != [k for k, _ in expected]:
        raise PromptError(
            f"the prompt's media placeholders {[tokens.MEDIA_TOKENS[k] for _, k in found]} do not match the "
            f"media given {[tokens.MEDIA_TOKENS[k] for k, _ in expected]}",
            hint="give one media input per placeholder, in the same order (a video with audio is "
            "written '<sound><vila/video>')",
        )
    chunks: list[Chunk] = []
    cursor = 0
    for (pos, _), (_, chunk) in zip(found, expected):
        _add_text(chunks, input_ids[cursor:pos])
        cursor = pos + 1
        if chunk is not None:
            chunks.append(chunk)
    _add_text(chunks, input_ids[cursor:])
    return chunks


def _add_text(chunks: list[Chunk], ids: Sequence[int]) -> None:
    if len(ids):
        chunks.append(TextChunk(tuple(int(i) for i in ids)))
