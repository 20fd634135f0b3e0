"""Incremental detokenization for streaming generated text.

A byte-level BPE token can hold part of a UTF-8 character (an emoji or a CJK character is often split
over two or three tokens), so decoding token by token would print U+FFFD. The decoder keeps a small
window of ids and re-decodes it, emitting only text that is final: the window decodes to something
longer than before and does not end in U+FFFD (an incomplete character). Decoding the previous token
with the new ones also keeps context-dependent decoders right (a SentencePiece "▁" at the start of a
window would otherwise lose its space).

The concatenated output equals `decode(ids, skip_special_tokens=True)`: UTF-8 decoding restarts
cleanly after every complete character, which is exactly where the window is cut.
"""

from __future__ import annotations

from tokenizers import Tokenizer

_REPLACEMENT = "\ufffd"


class StreamDecoder:
    """feed(id) -> newly final text (often ""), flush() -> whatever is left at the end."""

    def __init__(self, tokenizer: Tokenizer, special_ids: frozenset[int]) -> None:
        self._tok = tokenizer
        self._special = special_ids
        self._ids: list[int] = []
        # ids[_prefix:_read] were already emitted (kept as context); ids[_read:] are pending.
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True) if ids else ""

    def feed(self, token_id: int) -> str:
        token_id = int(token_id)
        # Special tokens are skipped by decode anyway; leaving them out keeps the window short and is
        # equivalent, since the decoder only ever sees the non-special tokens.
        if token_id in self._special:
            return ""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith(_REPLACEMENT):
            self._prefix, self._read = self._read, len(self._ids)
            # Drop ids that are no longer part of any window, so a long stream stays O(1) per token.
            if self._prefix > 0:
                del self._ids[: self._prefix]
                self._read -= self._prefix
                self._prefix = 0
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """The pending text (an invalid byte sequence comes out as U+FFFD, as decode() gives it)."""
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        self._ids, self._prefix, self._read = [], 0, 0
        return after[len(before) :]
