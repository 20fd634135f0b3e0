"""What a request asks for beyond its inputs (length, sampling, stops), and the answer it gets.

Torch-free and shared: the reference and the runtime stream tokens through the same `TokenStream`,
so stop handling and the `--json` answer are identical between them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vinci_edge.metrics import Metrics
from vinci_edge.sampling import SamplingParams


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
