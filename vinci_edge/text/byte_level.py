"""Byte-level BPE building blocks shared by the trained tokenizer and the vocab.json + merges.txt loader.

Both follow transformers' `Qwen2Converter`, so a tokenizer built here tokenizes exactly like the
`Qwen2TokenizerFast` transformers builds from the same files.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

# Qwen2's pre-tokenizer: contractions, letter runs (with one leading non-letter), single digits,
# punctuation runs, newlines and whitespace runs.
QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def qwen2_pre_tokenizer(add_prefix_space: bool = False) -> pre_tokenizers.PreTokenizer:
    """The regex split, then the GPT-2 byte-to-unicode mapping (without its own regex)."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=False),
        ]
    )


def finish_byte_level(tok: Tokenizer, nfc: bool) -> Tokenizer:
    """Attach the Qwen2 pre-tokenizer, decoder and post-processor to a byte-level BPE model.

    `nfc`: Qwen2 normalizes to NFC; the trained tokenizer does not, so that decode(encode(s)) == s for
    every string (a normalizer would fold e.g. "e" + combining accent into one code point).
    """
    tok.normalizer = normalizers.NFC() if nfc else None
    tok.pre_tokenizer = qwen2_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    # trim_offsets=False: offsets keep the leading space; ids are unaffected either way.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def qwen2_bpe_from_files(vocab_json: str, merges_txt: str) -> Tokenizer:
    """A Qwen2-style byte-level BPE from a slow tokenizer's vocab.json + merges.txt."""
    model = BPE.from_file(
        vocab_json,
        merges_txt,
        dropout=None,
        unk_token=None,
        continuing_subword_prefix="",
        end_of_word_suffix="",
        fuse_unk=False,
        byte_fallback=False,
    )
    return finish_byte_level(Tokenizer(model), nfc=True)
