"""Generation: what a request asks for beyond its inputs (length, sampling, stops), the one decode
loop, and the answer it gets.

Torch-free and shared: the reference and the runtime run the same `generate` over their own
`Decoder` (PyTorch with a DynamicCache, ONNX Runtime with an in-place KV cache), so the context
rule, sampling, stop handling and the streamed text are identical between them.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vinci_edge import metrics as m
from vinci_edge.errors import PromptError
from vinci_edge.metrics import Metrics
from vinci_edge.sampling import Sampler, SamplingParams


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 64
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop_strings: tuple[str, ...] = ()
    ignore_eos: bool = False  # generate exactly max_new_tokens (benchmarks, parity tests)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")


class TokenStream:
    """Turns token ids into text as they come, stops on stop strings, calls `on_text` with each
    new piece of text (never a partial UTF-8 character, never text past a stop string)."""

    def __init__(
        self, tokenizer: Any, stop_strings: tuple[str, ...] = (), on_text: Callable[[str], None] | None = None
    ) -> None:
        self.decoder = tokenizer.stream_decoder()
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.on_text = on_text
        self.text = ""
        self.emitted = 0  # characters passed to on_text
        self.stopped = False

    def _holdback(self) -> int:
        """Characters to keep back because they may be the start of a stop string."""
        keep = 0
        for s in self.stop_strings:
            for n in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        return keep

    def feed(self, token_id: int) -> bool:
        """Add one token; returns True when a stop string has been reached."""
        self.text += self.decoder.feed(token_id)
        self._cut_at_stop()
        self._emit(final=self.stopped)
        return self.stopped

    def finish(self) -> str:
        if not self.stopped:
            self.text += self.decoder.flush()
            self._cut_at_stop()
        self._emit(final=True)
        return self.text

    def _cut_at_stop(self) -> None:
        for s in self.stop_strings:
            idx = self.text.find(s)
            if idx >= 0:
                self.text = self.text[:idx]
                self.stopped = True

    def _emit(self, final: bool) -> None:
        upto = len(self.text) if final else len(self.text) - self._holdback()
        if self.on_text and upto > self.emitted:
            self.on_text(self.text[self.emitted : upto])
        self.emitted = max(self.emitted, upto)


@dataclass
class Answer:
    token_ids: list[int]
    text: str
    stop_reason: str  # "eos" | "stop_string" | "max_new_tokens"
    prompt_tokens: int
    metrics: Metrics
    backend: str
    warnings: list[str] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "stop_reason": self.stop_reason,
            "prompt_tokens": self.prompt_tokens,
            "backend": self.backend,
            "timings": self.metrics.summary(),
            "plan": self.plan,
            "warnings": self.warnings,
            **self.extra,
        }


class Decoder(Protocol):
    """An LLM behind a KV cache: a prompt's embeddings, then one token at a time."""

    provider: str  # where it runs, for the stage records
    context: int  # positions its cache holds

    def prefill(self, embeds: Any) -> np.ndarray:
        """Start a new cache with (S, D) prompt embeddings; the last position's logits (vocab,)."""
        ...

    def step(self, token: int) -> np.ndarray:
        """Append one generated token; its logits (vocab,)."""
        ...


def fit_context(n_prompt: int, max_new_tokens: int, context: int) -> tuple[int, list[str]]:
    """The new tokens a prompt of `n_prompt` positions leaves room for, and a warning when that is
    fewer than asked. A prompt that leaves no room is refused before anything is encoded."""
    if n_prompt >= context:
        raise PromptError(
            f"the prompt takes {n_prompt} positions but the decoder context is {context}",
            hint="use fewer frames (--num-frames), a shorter clip or question, or export with a larger "
            "--max-context",
        )
    max_new = min(max_new_tokens, context - n_prompt)
    if max_new < max_new_tokens:
        return max_new, [f"max_new_tokens cut to {max_new} to fit the decoder context"]
    return max_new, []


@dataclass
class Generated:
    token_ids: list[int]
    text: str
    stop_reason: str  # "eos" | "stop_string" | "max_new_tokens"


def generate(
    decoder: Decoder, embeds: Any, gen: GenerationConfig, tokenizer: Any, metrics: Metrics
) -> Generator[str, None, Generated]:
    """Prefill, then one step per token, yielding the answer's text as it is decoded. The first token
    comes from the prefill's logits; `gen.max_new_tokens` must already fit (`fit_context`)."""
    pending: list[str] = []
    stream = TokenStream(tokenizer, gen.stop_strings, pending.append)
    sampler = Sampler(gen.sampling)
    stop_ids = set() if gen.ignore_eos else set(tokenizer.eos_token_ids)
    with metrics.stage(m.PREFILL, positions=int(embeds.shape[0])) as attrs:
        attrs["provider"] = decoder.provider
        logits = decoder.prefill(embeds)
    tokens: list[int] = []
    reason = "max_new_tokens"
    for i in range(gen.max_new_tokens):
        tok = sampler(logits)
        metrics.mark_first_token()
        if tok in stop_ids:
            reason = "eos"
            break
        tokens.append(tok)
        stopped = stream.feed(tok)
        yield from pending
        pending.clear()
        if stopped:
            reason = "stop_string"
            break
        if i + 1 == gen.max_new_tokens:
            break
        with metrics.stage(m.DECODE):
            logits = decoder.step(tok)
    text = stream.finish()
    yield from pending
    return Generated(tokens, text, reason)


def consume(run: Generator[str, None, Any], on_text: Callable[[str], None] | None) -> Any:
    """Drive a generator of text pieces to its end, passing each piece to `on_text`; its result."""
    try:
        while True:
            piece = next(run)
            if on_text:
                on_text(piece)
    except StopIteration as done:
        return done.value
