"""TextTokenizer against transformers' AutoTokenizer on the same folders (no mocks, no hub)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vinci_edge.errors import ConfigError, PromptError
from vinci_edge.text import TextTokenizer
from vinci_edge.text.chat_templates import CHATML_PLAIN
from vinci_edge.text.train_tokenizer import write_trained_tokenizer
from vinci_edge.tokens import ENDOFTEXT, IM_END, IM_START, IMAGE, REQUIRED_SPECIAL_TOKENS

transformers = pytest.importorskip("transformers", reason="the reference tokenizer comes from transformers")

TEXTS = [
    "Hello, world! What is happening in the video?",
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 keycap 1️⃣",
    "CJK 中文字符测试，日本語のテキスト、한국어 텍스트",
    "  leading, trailing and   inner   whitespace  \n\n\n\t\ttabs\r\nCRLF \u3000ideographic\u00a0nbsp ",
    "special <|im_start|>user\nhi<|im_end|> and <image><vila/video> <sound>x<vila/sentinel>\n",
    "near-specials <|im_start <image <|image_bos|><|image_eos|> <|video_bos|>",
    "Contractions: don't, I'm, we'll, they've, she'd, IT'S",
    "digits 1234567890 3.14159 -42 1,000,000 x²³ ½ ٣ Ⅻ",
    "combining e\u0301 vs é, A\u030a vs Å, ﬁ ligature",
    "Arabic مرحبا بالعالم and Hebrew שלום",
    "code: def f(x):\n    return x ** 2  # comment\n",
    "",
    "\ufffd replacement char, \x00 nul, \x7f del",
]

CONVERSATIONS = [
    [{"role": "user", "content": "What is in the image? <image>"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi 😀"}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Describe the sound.\n<sound>"},
    ],
]

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)

# Uses what transformers' environment provides beyond plain Jinja: trim/lstrip blocks, tojson without
# HTML escaping, raise_exception, loop controls, {% generation %}, strftime_now, special tokens.
RICH_TEMPLATE = """{{ bos_token if bos_token else '' }}
{%- if messages[0]['role'] == 'system' %}
    {%- set sys = messages[0]['content'] %}{%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set sys = none %}{%- set loop_messages = messages %}
{%- endif %}
{% if sys %}<<SYS>>{{ sys | tojson }}<</SYS>>
{% endif %}
{% for message in loop_messages %}
    {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {% endif %}
    {% if message['role'] == 'assistant' %}
        {% generation %}{{ message['content'] | trim }}{{ eos_token }}{% endgeneration %}
    {% else %}
        [{{ message['role'] | upper }}] {{ message['content'] | tojson }} <&>
    {% endif %}
    {% if loop.index > 10 %}{% break %}{% endif %}
{% endfor %}
{% if add_generation_prompt %}[ASSISTANT] ({{ strftime_now('%Y') }}){% endif %}"""


# ---------------------------------------------------------------------------------------------------
# Folders: the trained tokenizer, a Qwen2 vocab.json + merges.txt folder and a legacy GPT-2 folder
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    write_trained_tokenizer(out, 1024)
    return out


def _qwen2_files_folder(src: Path, out: Path) -> Path:
    """The real Qwen2 slow layout: BPE vocabulary without the specials, which follow it as added tokens."""
    state = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    specials = [t["content"] for t in state["added_tokens"]]
    vocab = [tok for tok, _ in sorted(state["model"]["vocab"].items(), key=lambda kv: kv[1])]
    vocab = [tok for tok in vocab if tok not in specials]
    out.mkdir()
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["tokenizer_class"] = "Qwen2Tokenizer"
    config["added_tokens_decoder"] = {
        str(len(vocab) + i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in enumerate(specials)
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return out


def _gpt2_legacy_folder(src: Path, out: Path) -> Path:
    """A GPT-2 style folder: top-level ByteLevel pre-tokenizer saved with add_prefix_space=true (which
    transformers resets to the class default False), class default special tokens, no
    added_tokens_decoder (so special_tokens_map.json is read), and clean_up_tokenization_spaces on."""
    out.mkdir()
    state = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    state["pre_tokenizer"] = {
        "type": "ByteLevel",
        "add_prefix_space": True,
        "trim_offsets": True,
        "use_regex": True,
    }
    (out / "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
    config = {
        "tokenizer_class": "GPT2TokenizerFast",
        "clean_up_tokenization_spaces": True,
        "model_max_length": 1024,
        "chat_template": RICH_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (out / "special_tokens_map.json").write_text(
        json.dumps({"additional_special_tokens": [IMAGE, IM_START, IM_END]}), encoding="utf-8"
    )
    return out


@pytest.fixture(scope="module", params=["trained", "qwen2_files", "gpt2_legacy"])
def folder(
    request: pytest.FixtureRequest, trained_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    if request.param == "trained":
        return trained_dir
    out = tmp_path_factory.mktemp(request.param) / "tok"
    if request.param == "qwen2_files":
        return _qwen2_files_folder(trained_dir, out)
    return _gpt2_legacy_folder(trained_dir, out)


@pytest.fixture(scope="module")
def pair(folder: Path) -> tuple[TextTokenizer, object]:
    return TextTokenizer.from_folder(folder), transformers.AutoTokenizer.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------------
# encode / decode
# ---------------------------------------------------------------------------------------------------
def test_encode_matches_transformers(pair) -> None:
    ours, ref = pair
    for text in TEXTS:
        assert ours.encode(text) == ref(text, add_special_tokens=False)["input_ids"], text


def test_decode_matches_transformers(pair) -> None:
    ours, ref = pair
    for text in TEXTS:
        ids = ours.encode(text)
        for skip in (True, False):
            expected = ref.decode(ids, skip_special_tokens=skip)
            assert ours.decode(ids, skip_special_tokens=skip) == expected, text


def test_special_token_strings_map_to_single_ids(pair) -> None:
    ours, ref = pair
    for token in (IM_START, IM_END, IMAGE):
        idx = ours.token_id(token)
        assert ours.encode(f"a{token}b")[1] == idx == ref.convert_tokens_to_ids(token)
        assert ours.encode(token) == [idx]
        assert ours.decode([idx]) == ""  # special, so skipped by default
        assert ours.decode([idx], skip_special_tokens=False) == token


def test_vocab_size_and_stop_ids(pair) -> None:
    ours, ref = pair
    assert ours.vocab_size == len(ref)
    assert ours.eos_token_ids[0] == ref.eos_token_id
    stops = (ref.eos_token, IM_END, ENDOFTEXT)
    assert set(ours.eos_token_ids) == {ref.convert_tokens_to_ids(t) for t in stops}


def test_no_bos_is_added(pair) -> None:
    ours, _ = pair
    ids = ours.encode("hello")
    assert ours.decode(ids, skip_special_tokens=False) == "hello"


def test_legacy_gpt2_folder_behaves_like_transformers(tmp_path: Path, trained_dir: Path) -> None:
    folder = _gpt2_legacy_folder(trained_dir, tmp_path / "gpt2")
    ours, ref = TextTokenizer.from_folder(folder), transformers.AutoTokenizer.from_pretrained(folder)
    # Class defaults (GPT-2: <|endoftext|> for bos/eos/unk) and cleanup of " ." -> ".".
    assert ours.bos_token == ours.eos_token == ref.eos_token == ENDOFTEXT
    ids = ours.encode("Hello . Is it ? yes !")
    assert ours.decode(ids) == ref.decode(ids) == "Hello. Is it? yes!"


def test_tokens_only_in_tokenizer_config_are_added(trained_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "tok"
    shutil.copytree(trained_dir, folder)
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["additional_special_tokens"].append("<|new_special|>")
    config["added_tokens_decoder"]["1024"] = {
        "content": "<extra>",
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": False,
    }
    path.write_text(json.dumps(config), encoding="utf-8")
    ours, ref = TextTokenizer.from_folder(folder), transformers.AutoTokenizer.from_pretrained(folder)
    text = "a<|new_special|>b<extra>c"
    ids = ours.encode(text)
    assert ids == ref(text, add_special_tokens=False)["input_ids"]
    assert ours.vocab_size == len(ref) == 1026
    assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True) == "ab<extra>c"


# ---------------------------------------------------------------------------------------------------
# chat templates
# ---------------------------------------------------------------------------------------------------
def _with_template(src: Path, dst: Path, template: str | None) -> Path:
    shutil.copytree(src, dst)
    path = dst / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    if template is None:
        config.pop("chat_template", None)
    else:
        config["chat_template"] = template
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return dst


@pytest.mark.parametrize("template", ["own", "smollm2", "rich"])
def test_chat_template_matches_transformers(template: str, folder: Path, tmp_path: Path) -> None:
    if template != "own":
        text = SMOLLM2_TEMPLATE if template == "smollm2" else RICH_TEMPLATE
        folder = _with_template(folder, tmp_path / "tpl", text)
    ours, ref = TextTokenizer.from_folder(folder), transformers.AutoTokenizer.from_pretrained(folder)
    for messages in CONVERSATIONS:
        for gen in (True, False):
            expected = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            assert ours.apply_chat_template(messages, add_generation_prompt=gen) == expected
            # Tokenizing the rendered prompt gives transformers' tokenize=True ids.
            ref_ids = ref.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen)
            assert ours.encode(expected) == list(ref_ids)


def test_qwen2_template_default_system_prompt(trained_dir: Path) -> None:
    tok = TextTokenizer.from_folder(trained_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    with_system = tok.apply_chat_template(messages, add_generation_prompt=False)
    assert with_system == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"


def test_template_raise_exception_is_a_prompt_error(trained_dir: Path, tmp_path: Path) -> None:
    folder = _with_template(trained_dir, tmp_path / "tpl", RICH_TEMPLATE)
    bad = [{"role": "assistant", "content": "I speak first"}]
    with pytest.raises(PromptError, match="roles must alternate"):
        TextTokenizer.from_folder(folder).apply_chat_template(bad)
    ref = transformers.AutoTokenizer.from_pretrained(folder)
    with pytest.raises(Exception, match="roles must alternate"):
        ref.apply_chat_template(bad, tokenize=False)


def test_chat_template_jinja_file_takes_priority(trained_dir: Path, tmp_path: Path) -> None:
    folder = _with_template(trained_dir, tmp_path / "tpl", RICH_TEMPLATE)
    (folder / "chat_template.jinja").write_text(SMOLLM2_TEMPLATE, encoding="utf-8")
    ours, ref = TextTokenizer.from_folder(folder), transformers.AutoTokenizer.from_pretrained(folder)
    expected = ref.apply_chat_template(CONVERSATIONS[0], tokenize=False, add_generation_prompt=True)
    assert "SmolLM" in expected
    assert ours.apply_chat_template(CONVERSATIONS[0]) == expected


def test_missing_template_falls_back_to_plain_chatml(trained_dir: Path, tmp_path: Path) -> None:
    tok = TextTokenizer.from_folder(_with_template(trained_dir, tmp_path / "tpl", None))
    assert tok.chat_template == CHATML_PLAIN
    assert tok.apply_chat_template([{"role": "user", "content": "Hi"}]) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


# ---------------------------------------------------------------------------------------------------
# streaming
# ---------------------------------------------------------------------------------------------------
STREAM_TEXTS = [
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 🇫🇷",
    "中文字符测试，日本語のテキスト、한국어",
    "mixed <|im_start|>assistant\n答案是 42 😀<|im_end|>",
    " leading space and trailing \n",
]


def test_stream_decoder_concatenation_equals_decode(trained_dir: Path) -> None:
    tok = TextTokenizer.from_folder(trained_dir)
    for text in STREAM_TEXTS:
        ids = tok.encode(text)
        dec = tok.stream_decoder()
        pieces = [dec.feed(i) for i in ids]
        pieces.append(dec.flush())
        assert "".join(pieces) == tok.decode(ids), text
        assert all("\ufffd" not in p for p in pieces), pieces
    # Multi-byte characters span several byte-level tokens here, so some feeds must emit nothing.
    ids = tok.encode("😀")
    assert len(ids) > 1
    dec = tok.stream_decoder()
    assert [dec.feed(i) for i in ids] == [""] * (len(ids) - 1) + ["😀"]
    assert dec.flush() == ""


def test_stream_decoder_invalid_bytes_come_out_like_decode(trained_dir: Path) -> None:
    tok = TextTokenizer.from_folder(trained_dir)
    emoji = tok.encode("😀")
    ids = tok.encode("a") + emoji[1:] + tok.encode(" ok") + emoji[:1]  # orphan and unfinished bytes
    dec = tok.stream_decoder()
    out = "".join(dec.feed(i) for i in ids) + dec.flush()
    assert out == tok.decode(ids)
    assert "\ufffd" in out


# ---------------------------------------------------------------------------------------------------
# token ids and errors
# ---------------------------------------------------------------------------------------------------
def test_token_id(trained_dir: Path) -> None:
    tok = TextTokenizer.from_folder(trained_dir)
    for token in REQUIRED_SPECIAL_TOKENS:
        assert tok.encode(token) == [tok.token_id(token)]
    assert tok.token_id(ENDOFTEXT) == 0
    assert tok.decode([tok.token_id("\n")]) == "\n"  # stored as "Ċ" in a byte-level vocabulary
    with pytest.raises(ConfigError, match="not a single token") as err:
        tok.token_id("<not-a-token>")
    assert err.value.hint


def test_folder_errors(tmp_path: Path, trained_dir: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        TextTokenizer.from_folder(tmp_path / "missing")
    with pytest.raises(ConfigError, match="holds no tokenizer"):
        TextTokenizer.from_folder(tmp_path)
    folder = _qwen2_files_folder(trained_dir, tmp_path / "gpt2_files")
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["tokenizer_class"] = "GPT2Tokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ConfigError, match="no tokenizer.json"):
        TextTokenizer.from_folder(folder)


def test_tokenizer_module_is_torch_free(trained_dir: Path) -> None:
    code = (
        "import sys\n"
        "from vinci_edge.text import TextTokenizer\n"
        f"tok = TextTokenizer.from_folder({str(trained_dir)!r})\n"
        "tok.apply_chat_template([{'role': 'user', 'content': 'hi'}])\n"
        "bad = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
