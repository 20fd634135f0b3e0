"""Teacher-forced decoder logits: a token window appended one position at a time to the runtime
decoder's KV cache, from empty.

That is the decode path every answer token takes, so the perplexity computed from these logits
(stats.py) measures what ships. The accuracy report runs it through a Pipeline's decoder; the
`--keep-fp32 auto` sweep (sensitivity.py) on a bare OrtDecoder.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vinci_edge.errors import ConfigError
from vinci_edge.progress import Progress


def teacher_forced_logits(pipe, window: list[int], label: str, say: Progress) -> np.ndarray:
    """The runtime decoder's logits over the window (decoder_logits), with progress."""
    n = len(window) - 1
    step = max(1, len(window) // 4)

    def progress(i: int) -> None:
        if i % step == 0:
            say(f"{label}: perplexity window {i}/{n} tokens")

    return decoder_logits(pipe.decoder, pipe.text_table, window, progress)


def decoder_logits(
    decoder,
    table: np.ndarray,
    window: list[int],
    progress: Callable[[int], None] | None = None,
    prefill: int = 0,
) -> np.ndarray:
    """Each token of the window (its row of the embedding `table`) appended to the decoder's KV
    cache in turn, from empty; row i of the result, the logits after token i, predicts token i + 1.
    `progress(i)` is called after i tokens. `prefill` > 1: the first `prefill` tokens go in one
    append (a prefill, the path a prompt takes: an engine's prefill graph when it has one), the
    rest one at a time; the result then starts at row prefill - 1 (the prefill's last position), so
    its perplexity is that of a continuation written into the prefill's KV cache."""
    if len(window) > decoder.context:
        raise ConfigError(
            f"a window of {len(window)} tokens exceeds the decoder context ({decoder.context})",
            hint="pass a smaller --tokens",
        )
    if not 0 <= prefill < len(window):
        raise ValueError(f"a prefill of {prefill} tokens does not fit a window of {len(window)}")
    decoder.reset()
    rows = np.empty((len(window) - 1, decoder.spec.vocab_size), np.float32)
    first = 0
    if prefill > 1:
        rows[prefill - 1] = decoder.append(table[window[:prefill]])
        first = prefill
    for i in range(first, len(window) - 1):
        rows[i] = decoder.append(table[window[i]][None])  # copied: append returns a view of its buffer
        if progress is not None:
            progress(i + 1)
    decoder.reset()
    return rows[max(first - 1, 0) :]
