"""The offline-trained byte-level BPE tokenizer: deterministic, fast, loadable by both stacks."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from vinci_edge.errors import ConfigError
from vinci_edge.text import TextTokenizer
from vinci_edge.text.train_tokenizer import write_trained_tokenizer
from vinci_edge.tokens import ENDOFTEXT, IM_END, REQUIRED_SPECIAL_TOKENS

FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _random_unicode(rng: random.Random, n: int) -> str:
    """Any code point but surrogates: ASCII, Latin, combining marks, CJK, emoji, astral planes."""
    ranges = [
        (0x0, 0x7F),
        (0x80, 0x7FF),
        (0x300, 0x36F),
        (0x4E00, 0x9FFF),
        (0x1F300, 0x1FAFF),
        (0x10000, 0x10FFFF),
    ]
    out = []
    for _ in range(n):
        lo, hi = rng.choice(ranges)
        cp = rng.randint(lo, hi)
        out.append(chr(cp) if not 0xD800 <= cp <= 0xDFFF else "?")
    return "".join(out)


def test_training_is_deterministic_across_processes(tmp_path: Path) -> None:
    write_trained_tokenizer(tmp_path / "a", 1024)
    # A second process: a different hash seed for every Rust and Python hash map.
    code = (
        "import sys\n"
        "from vinci_edge.text.train_tokenizer import write_trained_tokenizer\n"
        "write_trained_tokenizer(sys.argv[1], 1024)\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "b")],
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.parametrize("vocab_size", [1024, 8192])
def test_training_size(tmp_path: Path, vocab_size: int) -> None:
    write_trained_tokenizer(tmp_path, vocab_size)
    tok = TextTokenizer.from_folder(tmp_path)
    assert tok.vocab_size <= vocab_size
    if vocab_size == 1024:
        assert tok.vocab_size == 1024  # the corpus is rich enough to fill a small vocabulary exactly
    state = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    assert len(state["model"]["vocab"]) == tok.vocab_size


def test_special_tokens_are_single_reserved_ids(tmp_path: Path) -> None:
    write_trained_tokenizer(tmp_path, 1024)
    tok = TextTokenizer.from_folder(tmp_path)
    ids = [tok.token_id(t) for t in REQUIRED_SPECIAL_TOKENS]
    assert ids[0] == tok.token_id(ENDOFTEXT) == 0
    assert sorted(ids) == list(range(len(REQUIRED_SPECIAL_TOKENS)))
    assert set(ids) == set(tok.special_token_ids)
    text = "".join(f"x{t}" for t in REQUIRED_SPECIAL_TOKENS)
    assert [i for i in tok.encode(text) if i in tok.special_token_ids] == ids
    assert tok.eos_token == IM_END
    assert tok.eos_token_ids == [tok.token_id(IM_END), 0]
    assert tok.bos_token is None
    assert tok.pad_token_id == 0


def test_common_words_are_single_tokens(tmp_path: Path) -> None:
    write_trained_tokenizer(tmp_path, 1024)
    tok = TextTokenizer.from_folder(tmp_path)
    for word in ("The", " the", " video", " image", " sound", " is", " what", " and", " people"):
        assert len(tok.encode(word)) == 1, word
    sentence = "What is happening in the video?"
    assert len(tok.encode(sentence)) <= 8


def test_round_trip_of_arbitrary_unicode(tmp_path: Path) -> None:
    write_trained_tokenizer(tmp_path, 1024)
    tok = TextTokenizer.from_folder(tmp_path)
    rng = random.Random(0)
    for _ in range(200):
        text = _random_unicode(rng, rng.randint(0, 40))
        assert tok.decode(tok.encode(text)) == text
    # No normalizer: a decomposed accent stays decomposed.
    assert tok.decode(tok.encode("e\u0301")) == "e\u0301"


def test_loads_in_transformers_and_agrees(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    write_trained_tokenizer(tmp_path, 2048)
    ours = TextTokenizer.from_folder(tmp_path)
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ref).__name__ == "Qwen2TokenizerFast"
    assert len(ref) == ours.vocab_size
    assert ref.eos_token == IM_END and ref.pad_token == ENDOFTEXT and ref.bos_token is None
    rng = random.Random(1)
    texts = [_random_unicode(rng, 30) for _ in range(50)] + ["Hi <image> there<|im_end|>\n\n  x"]
    for text in texts:
        ids = ref(text, add_special_tokens=False)["input_ids"]
        assert ours.encode(text) == ids
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)
    messages = [{"role": "user", "content": "Describe <image>"}]
    assert ours.apply_chat_template(messages) == ref.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )


def test_too_small_vocab_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="too small"):
        write_trained_tokenizer(tmp_path, 200)
