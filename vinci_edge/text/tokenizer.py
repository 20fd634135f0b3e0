"""The runtime text tokenizer: a Hugging Face tokenizer folder, used the way transformers uses it.

Torch-free (only `tokenizers`, `jinja2` and the standard library), so the edge runtime can tokenize
prompts and detokenize output without transformers. `from_folder` reproduces what
`AutoTokenizer.from_pretrained` does to a folder where it affects ids or text: added tokens from
tokenizer_config.json, special-token defaults of the Qwen2/GPT-2/Llama classes, `add_prefix_space`,
`split_special_tokens`, `clean_up_tokenization_spaces` and the chat template (chat_template.jinja first,
as transformers does).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, pre_tokenizers

from vinci_edge.errors import ConfigError
from vinci_edge.text.byte_level import qwen2_bpe_from_files
from vinci_edge.text.chat_render import render_chat_template
from vinci_edge.text.chat_templates import CHATML_PLAIN
from vinci_edge.text.stream_decoder import StreamDecoder
from vinci_edge.tokens import ENDOFTEXT, IM_END

# transformers' SpecialTokensMixin attributes, in its order (the order of the template variables).
_SPECIAL_ATTRS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

# Constructor defaults of the tokenizer classes vinci-edge meets; they apply when tokenizer_config.json
# does not name the token at all (an explicit null overrides them).
_QWEN2_DEFAULTS = {"unk_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
_GPT2_DEFAULTS = {"unk_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
_LLAMA_DEFAULTS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
_CLASS_DEFAULTS: dict[str, dict[str, str]] = {
    "Qwen2Tokenizer": _QWEN2_DEFAULTS,
    "Qwen2TokenizerFast": _QWEN2_DEFAULTS,
    "GPT2Tokenizer": _GPT2_DEFAULTS,
    "GPT2TokenizerFast": _GPT2_DEFAULTS,
    "LlamaTokenizer": _LLAMA_DEFAULTS,
    "LlamaTokenizerFast": _LLAMA_DEFAULTS,
}
# The Llama classes default add_prefix_space to None (leave the pre-tokenizer alone); all others to False.
_PREFIX_SPACE_UNSET = ("LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer", "CodeLlamaTokenizerFast")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def _token_content(value: Any) -> str | None:
    """A special token as tokenizer_config.json stores it: a string, an AddedToken dict, or null."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _as_added_token(value: Any, special: bool) -> AddedToken:
    if isinstance(value, dict):
        flags = {k: value[k] for k in ("single_word", "lstrip", "rstrip", "normalized") if k in value}
        return AddedToken(value["content"], special=bool(value.get("special", special)), **flags)
    return AddedToken(str(value), special=special)


def _token_key(tok: AddedToken) -> tuple[Any, ...]:
    return (tok.content, tok.single_word, tok.lstrip, tok.rstrip, tok.normalized, tok.special)


def _clean_up_tokenization(text: str) -> str:
    """transformers' `clean_up_tokenization` (applied only when the config asks for it)."""
    for before, after in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(before, after)
    return text


def _load_config(folder: Path) -> dict[str, Any]:
    config_path = folder / "tokenizer_config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    map_path = folder / "special_tokens_map.json"
    # transformers reads special_tokens_map.json only for configs without added_tokens_decoder (legacy
    # folders), and then its values win over tokenizer_config.json's.
    if "added_tokens_decoder" not in config and map_path.is_file():
        for key, value in _read_json(map_path).items():
            if key == "additional_special_tokens" and isinstance(value, list):
                merged = list(config.get("additional_special_tokens") or [])
                merged += [v for v in value if v not in merged]
                config[key] = merged
            else:
                config[key] = value
    return config


def _load_chat_template(folder: Path, config: dict[str, Any]) -> str | dict[str, str] | None:
    """Template file(s) take priority over tokenizer_config.json, as in transformers >= 4.47."""
    templates: dict[str, str] = {}
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        templates["default"] = jinja_file.read_text(encoding="utf-8")
    extra_dir = folder / "additional_chat_templates"
    if extra_dir.is_dir():
        for path in sorted(extra_dir.glob("*.jinja")):
            templates[path.stem] = path.read_text(encoding="utf-8")
    if templates:
        return templates["default"] if list(templates) == ["default"] else templates
    value = config.get("chat_template")
    if isinstance(value, list):  # legacy list of named templates
        return {str(t["name"]): str(t["template"]) for t in value}
    return value if isinstance(value, str) else None


def _load_backend(folder: Path, config: dict[str, Any]) -> Tokenizer:
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.is_file():
        try:
            return Tokenizer.from_file(str(tokenizer_json))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise ConfigError(
                f"{tokenizer_json} cannot be loaded: {exc}",
                hint="the file may be truncated or written by a newer `tokenizers`; re-save the tokenizer",
            ) from exc
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if vocab.is_file() and merges.is_file():
        cls = str(config.get("tokenizer_class") or "Qwen2Tokenizer")
        if not cls.startswith("Qwen2"):
            raise ConfigError(
                f"{folder} has vocab.json + merges.txt for a {cls}, but no tokenizer.json",
                hint="only Qwen2 folders are rebuilt from vocab.json + merges.txt; save the tokenizer once "
                "with transformers (tokenizer.save_pretrained) to get a tokenizer.json",
            )
        return qwen2_bpe_from_files(str(vocab), str(merges))
    raise ConfigError(
        f"{folder} holds no tokenizer (neither tokenizer.json nor vocab.json + merges.txt)",
        hint="point at the checkpoint's llm/ folder, or the folder a tokenizer was saved to",
    )


def _add_config_tokens(backend: Tokenizer, config: dict[str, Any], specials: dict[str, str | None]) -> None:
    """Register the tokens transformers adds on load: added_tokens_decoder entries the backend lacks
    (or holds with other flags), then special tokens that are not added tokens yet."""
    existing = {_token_key(t) for t in backend.get_added_tokens_decoder().values()}
    decoder = config.get("added_tokens_decoder") or {}
    to_add: list[AddedToken] = []
    for _idx, value in sorted(decoder.items(), key=lambda kv: int(kv[0])):
        tok = _as_added_token(value, special=False)
        if _token_key(tok) not in existing:
            to_add.append(tok)
    named = [t for t in specials.values() if t] + [
        c for c in (_token_content(v) for v in config.get("additional_special_tokens") or []) if c
    ]
    known = {t.content for t in backend.get_added_tokens_decoder().values()} | {t.content for t in to_add}
    to_add += [AddedToken(t, special=True) for t in dict.fromkeys(named) if t not in known]
    special_names = set(named)
    for tok in to_add:
        if tok.content in special_names:
            tok.special = True
    if to_add:
        backend.add_tokens(to_add)
    for idx, value in decoder.items():
        content = _token_content(value)
        if content is not None and backend.token_to_id(content) != int(idx):
            raise ConfigError(
                f"added token {content!r} has id {backend.token_to_id(content)}, but tokenizer_config.json "
                f"says {idx}",
                hint="tokenizer.json (or vocab.json) and tokenizer_config.json come from different "
                "tokenizers",
            )


def _apply_prefix_space(backend: Tokenizer, config: dict[str, Any]) -> None:
    # transformers rewrites a top-level pre-tokenizer's add_prefix_space to the class setting.
    default = None if config.get("tokenizer_class") in _PREFIX_SPACE_UNSET else False
    wanted = config.get("add_prefix_space", default)
    if not isinstance(wanted, bool) or backend.pre_tokenizer is None:
        return
    state = json.loads(backend.pre_tokenizer.__getstate__())
    if "add_prefix_space" in state and state["add_prefix_space"] != wanted:
        state["add_prefix_space"] = wanted
        # transformers leaves pre-tokenizers it cannot rebuild unchanged.
        with contextlib.suppress(Exception):
            backend.pre_tokenizer = getattr(pre_tokenizers, state.pop("type"))(**state)


class TextTokenizer:
    """Encode/decode, chat templates and streaming detokenization for one tokenizer folder."""

    def __init__(
        self,
        backend: Tokenizer,
        special_tokens: dict[str, str | None],
        additional_special_tokens: list[str] | None = None,
        chat_template: str | dict[str, str] | None = None,
        clean_up_tokenization_spaces: bool = False,
    ) -> None:
        self._tok = backend
        # transformers' encode never truncates or pads unless asked.
        self._tok.no_truncation()
        self._tok.no_padding()
        self._specials = {k: special_tokens.get(k) for k in _SPECIAL_ATTRS}
        self._additional = list(additional_special_tokens or [])
        self._chat_template = chat_template
        self._clean_up = clean_up_tokenization_spaces
        added = backend.get_added_tokens_decoder()
        self.special_token_ids: frozenset[int] = frozenset(i for i, t in added.items() if t.special)
        ids = list(backend.get_vocab(with_added_tokens=True).values())
        # The embedding table must cover the largest id, even if the vocabulary has holes.
        self.vocab_size: int = max(backend.get_vocab_size(with_added_tokens=True), max(ids, default=-1) + 1)
        stops = [self._specials["eos_token"], IM_END, ENDOFTEXT]
        self.eos_token_ids: list[int] = list(
            dict.fromkeys(i for i in (backend.token_to_id(t) for t in stops if t) if i is not None)
        )

    # ---- loading ----
    @classmethod
    def from_folder(cls, folder: str | Path) -> TextTokenizer:
        """Load an HF tokenizer folder (tokenizer.json, or a Qwen2 vocab.json + merges.txt)."""
        path = Path(folder)
        if not path.is_dir():
            raise ConfigError(
                f"tokenizer folder {path} does not exist",
                hint="pass the folder with tokenizer.json and tokenizer_config.json (a checkpoint's llm/)",
            )
        config = _load_config(path)
        backend = _load_backend(path, config)
        defaults = _CLASS_DEFAULTS.get(str(config.get("tokenizer_class")), {})
        specials = {
            attr: _token_content(config[attr]) if attr in config else defaults.get(attr)
            for attr in _SPECIAL_ATTRS
        }
        additional = [c for c in map(_token_content, config.get("additional_special_tokens") or []) if c]
        _add_config_tokens(backend, config, specials)
        _apply_prefix_space(backend, config)
        backend.encode_special_tokens = bool(config.get("split_special_tokens", False))
        return cls(
            backend,
            specials,
            additional_special_tokens=additional,
            chat_template=_load_chat_template(path, config),
            clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
        )

    # ---- tokens ----
    @property
    def backend(self) -> Tokenizer:
        """The underlying `tokenizers.Tokenizer` (for batch encoding or offsets)."""
        return self._tok

    @property
    def bos_token(self) -> str | None:
        return self._specials["bos_token"]

    @property
    def eos_token(self) -> str | None:
        return self._specials["eos_token"]

    @property
    def pad_token_id(self) -> int | None:
        pad = self._specials["pad_token"]
        return self._tok.token_to_id(pad) if pad else None

    def token_id(self, token: str) -> int:
        """The id of `token`: a vocabulary entry or added token, or text that encodes to one id
        (so "\\n" works for byte-level vocabularies, which store it as "Ċ")."""
        idx = self._tok.token_to_id(token)
        if idx is not None:
            return idx
        ids = self.encode(token) if token else []
        if len(ids) == 1:
            return ids[0]
        raise ConfigError(
            f"token {token!r} is not a single token of this tokenizer",
            hint="the tokenizer lacks a token vinci-edge needs; checkpoints made by `vinci-edge "
            "init-checkpoint` or the GGUF import add all of vinci_edge.tokens.REQUIRED_SPECIAL_TOKENS",
        )

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(int(token_id))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without BOS/EOS; special-token strings in the text become their ids."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        text = self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        return _clean_up_tokenization(text) if self._clean_up else text

    def stream_decoder(self) -> StreamDecoder:
        """An incremental detokenizer (special tokens skipped). It never applies
        clean_up_tokenization_spaces, which would rewrite text already streamed."""
        return StreamDecoder(self._tok, self.special_token_ids)

    # ---- chat ----
    @property
    def chat_template(self) -> str:
        """The template `apply_chat_template` renders (plain ChatML when the folder has none)."""
        return self._select_template(tools=None)

    def _select_template(self, tools: list[dict[str, Any]] | None) -> str:
        template = self._chat_template
        if isinstance(template, dict):
            if tools is not None and "tool_use" in template:
                return template["tool_use"]
            if "default" in template:
                return template["default"]
            raise ConfigError(
                f"the tokenizer has several chat templates ({', '.join(sorted(template))}) and no 'default'",
                hint="name one of them 'default' in tokenizer_config.json",
            )
        return template if template is not None else CHATML_PLAIN

    def template_variables(self) -> dict[str, Any]:
        """The special-token variables transformers passes to a chat template."""
        variables: dict[str, Any] = {k: v for k, v in self._specials.items() if v}
        if self._additional:
            variables["additional_special_tokens"] = list(self._additional)
        return variables

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        *,
        tools: list[dict[str, Any]] | None = None,
        documents: list[dict[str, Any]] | None = None,
        **template_kwargs: Any,
    ) -> str:
        """Render the conversation as transformers' `apply_chat_template(..., tokenize=False)` does;
        `template_kwargs` are extra template variables and override special tokens of the same name."""
        return render_chat_template(
            self._select_template(tools),
            messages,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
            documents=documents,
            **{**self.template_variables(), **template_kwargs},
        )
