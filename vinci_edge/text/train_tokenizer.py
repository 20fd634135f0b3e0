"""Train a small byte-level BPE tokenizer offline, for test and preset checkpoints.

The result is a Qwen2-style tokenizer folder (tokenizer.json, tokenizer_config.json,
special_tokens_map.json) that both `TextTokenizer` and transformers' `AutoTokenizer` load. Training is
deterministic: a fixed built-in corpus fed in a fixed order, and `tokenizers`' BPE trainer breaks ties
between equally frequent pairs by pair order, not by hash order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

from vinci_edge.errors import ConfigError
from vinci_edge.text.byte_level import finish_byte_level
from vinci_edge.text.chat_templates import CHATML_QWEN2
from vinci_edge.text.english_corpus import CORPUS
from vinci_edge.tokens import ENDOFTEXT, IM_END, REQUIRED_SPECIAL_TOKENS

# Every byte is in the vocabulary, so any string encodes (no unknown token is ever needed).
_BYTE_ALPHABET = pre_tokenizers.ByteLevel.alphabet()
# Pairs seen once are merged too, so that small requests (up to ~1800) are filled exactly; beyond
# that every pre-token of the corpus is already one token and training stops early.
_MIN_FREQUENCY = 1


def _special_tokens() -> list[str]:
    tokens = list(dict.fromkeys(REQUIRED_SPECIAL_TOKENS))
    # <|endoftext|> (pad and document separator) gets id 0, whatever order tokens.py lists them in.
    tokens.remove(ENDOFTEXT)
    return [ENDOFTEXT, *tokens]


def train_byte_level_bpe(vocab_size: int, corpus: str = CORPUS) -> Tokenizer:
    """The trained `tokenizers.Tokenizer` (special tokens first, then the 256 bytes, then merges),
    trained on `corpus` (the built-in English text unless a task gives its own)."""
    specials = _special_tokens()
    floor = len(specials) + len(_BYTE_ALPHABET)
    if vocab_size < floor:
        raise ConfigError(
            f"vocab_size {vocab_size} is too small for a byte-level tokenizer",
            hint=f"use at least {floor} ({len(specials)} special tokens + 256 bytes)",
        )
    tok = finish_byte_level(Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False)), nfc=False)
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=_MIN_FREQUENCY,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in specials],
        initial_alphabet=_BYTE_ALPHABET,
        show_progress=False,
    )
    tok.train_from_iterator(corpus.splitlines(keepends=True), trainer=trainer)
    return tok


def _added_token_entry(content: str) -> dict[str, Any]:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def write_trained_tokenizer(
    out_dir: str | Path,
    vocab_size: int,
    chat_template: str = CHATML_QWEN2,
    *,
    model_max_length: int = 32768,
    corpus: str = CORPUS,
) -> None:
    """Train a tokenizer of at most `vocab_size` entries and write it as an HF tokenizer folder.

    The corpus is small, so large requests stop early (every corpus word already one token): read the
    real size back with `TextTokenizer.from_folder(out_dir).vocab_size`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_byte_level_bpe(vocab_size, corpus)
    tok.save(str(out / "tokenizer.json"), pretty=True)

    specials = _special_tokens()
    eos, pad = IM_END, ENDOFTEXT
    decoder = {str(tok.token_to_id(t)): _added_token_entry(t) for t in specials}
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [t for t in specials if t not in (eos, pad)],
        "bos_token": None,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": eos,
        "errors": "replace",
        "model_max_length": int(model_max_length),
        "pad_token": pad,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2TokenizerFast",
        "unk_token": None,
    }
    special_map = {
        "additional_special_tokens": config["additional_special_tokens"],
        "eos_token": eos,
        "pad_token": pad,
    }
    for name, data in (("tokenizer_config.json", config), ("special_tokens_map.json", special_map)):
        (out / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
