"""Questions to a live session and their answers: the options a session runs with, a queued question,
the answer it gets (or the refusal), and the decoder view that appends a question after the media."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vinci_edge.errors import VinciEdgeError
from vinci_edge.generation import Answer, GenerationConfig


class QuestionRefused(VinciEdgeError):
    """A question the session will not answer; the message says why."""


@dataclass(frozen=True)
class LiveOptions:
    fps: float = 1.0  # frames sampled per second of stream
    chunk_seconds: float = 2.0  # one segment: its frames, then its audio (a TEG group)
    static_threshold: float | None = None  # skip frames this close to the last encoded one (0..1)
    max_queued_frames: int = 8  # sampled frames waiting for the vision stage; more are dropped
    max_queued_audio_seconds: float = 10.0  # audio waiting for the worker; more is dropped
    max_queued_questions: int = 8  # questions waiting for an answer; more are refused
    window: int | None = None  # positions the cache holds before a question (default: context - reserve)
    keep_fraction: float = 0.5  # an eviction keeps this fraction of the window's media
    max_new_tokens: int = 64  # default answer length
    conversation: bool = False  # keep each question and answer in the cache
    system_prompt: str | None = None
    keep_inputs: bool = False  # keep frames' pixels and audio's log-mel in the chunks (parity, tests)
    late_seconds: float = 1.0  # a real-time segment closes this long after its end, late stream or not

    def __post_init__(self) -> None:
        checks = [
            (self.fps > 0, "fps must be above 0"),
            (self.chunk_seconds > 0, "chunk_seconds must be above 0"),
            (
                self.static_threshold is None or 0 <= self.static_threshold <= 1,
                "static_threshold must be in 0..1",
            ),
            (self.max_queued_frames >= 1, "max_queued_frames must be at least 1"),
            (self.max_queued_audio_seconds > 0, "max_queued_audio_seconds must be above 0"),
            (self.max_queued_questions >= 1, "max_queued_questions must be at least 1"),
            (self.window is None or self.window >= 16, "window must be at least 16 positions"),
            (0 < self.keep_fraction < 1, "keep_fraction must be in (0, 1)"),
            (self.max_new_tokens >= 1, "max_new_tokens must be at least 1"),
            (self.late_seconds >= 0, "late_seconds must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class Question:
    qid: int
    question: str
    gen: GenerationConfig
    until: float | None  # answer once media up to this stream time is in (None: at once)
    on_text: Callable[[str], None] | None
    origin: str  # "api" | "cli" | "web" | "periodic" | "speech"
    asked_at: float  # stream time
    submitted_ns: int = field(default_factory=time.perf_counter_ns)
    future: Future = field(default_factory=Future)


@dataclass
class LiveAnswer:
    qid: int
    question: str
    origin: str
    asked_at: float  # stream time the question was submitted
    media_until: float  # stream time up to which media was in the cache
    answer: Answer
    ttft_s: float  # from submit to the first token (queueing included)
    total_s: float
    frame: tuple[float, np.ndarray] | None = None  # the newest frame in the cache, (time, rgb)

    @property
    def text(self) -> str:
        return self.answer.text

    @property
    def token_ids(self) -> list[int]:
        return self.answer.token_ids

    def to_json(self) -> dict[str, Any]:
        return {
            "qid": self.qid,
            "question": self.question,
            "origin": self.origin,
            "asked_at": self.asked_at,
            "media_until": self.media_until,
            "text": self.text,
            "token_ids": self.token_ids,
            "ttft_s": self.ttft_s,
            "total_s": self.total_s,
            "frame_t": self.frame[0] if self.frame else None,
            "timings": self.answer.metrics.summary(),
            "prompt_tokens": self.answer.prompt_tokens,
            "stop_reason": self.answer.stop_reason,
        }


class AfterPrefix:
    """The decoder as the shared decode loop sees it: its 'prefill' appends after the cached prefix
    (the media), so a question costs only its own positions."""

    def __init__(self, decoder: Any, prefix: int) -> None:
        self.decoder = decoder
        self.prefix = prefix
        self.provider = decoder.provider
        self.context = decoder.context

    def prefill(self, embeds: np.ndarray) -> np.ndarray:
        self.decoder.rewind(self.prefix)
        return self.decoder.append(embeds)

    def step(self, token: int) -> np.ndarray:
        return self.decoder.step(token)
