"""Import a GGUF chat LLM (e.g. SmolLM2) as a vinci-edge `llm/` folder.

transformers loads and dequantizes the GGUF; this module then repairs what its GGUF tokenizer
conversion gets wrong, so the written folder tokenizes like llama.cpp does on the same file:

- the converted post-processor prepends BOS to every `tokenizer(text)` call, even where the GGUF says
  `tokenizer.ggml.add_bos_token = false` (SmolLM2): it is dropped when the file says so;
- eos is taken from the BOS id (a transformers bug: SmolLM2 would stop on `<|im_start|>`): the chat
  model's eos is set to `<|im_end|>`;
- byte-level (`gpt2`) vocabularies get a plain byte-level BPE: no normalizer, no byte fallback, a
  ByteLevel decoder, `clean_up_tokenization_spaces` as llama.cpp's "clean_spaces" (off for SmolLM2;
  transformers turns it on), and for the llama.cpp pre-tokenizers that split digits one by one
  (SmolLM2's "smollm"), the same digit split, without which texts like "a  1" tokenize differently.

Then the media/ChatML special tokens vinci-edge needs are added, the embeddings grow to the new vocabulary
(new rows = mean of the old rows) and everything is saved in the Hugging Face layout: config.json,
model.safetensors, tokenizer.json, tokenizer_config.json (with the model's own chat template) and
special_tokens_map.json.

Export-side code: torch and transformers are imported lazily, inside `import_gguf_llm`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

from vinci_edge.errors import CheckpointError, MissingDependencyError
from vinci_edge.progress import Progress
from vinci_edge.tokens import IM_END, REQUIRED_SPECIAL_TOKENS

STAGES = (
    "reading GGUF metadata",
    "loading config",
    "loading tokenizer",
    "loading weights",
    "adding special tokens",
    "saving",
)

_GGUF_MAGIC = b"GGUF"
# GGUF value types: scalar struct formats, and the two variable-size types.
_SCALAR_FORMATS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9

# transformers' renames of llama.cpp architecture names into model types, and the non-architecture
# keys of its GGUF mapping table.
_TRANSFORMERS_RENAMES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gemma3": "gemma3_text"}
_NOT_ARCHITECTURES = frozenset({"general", "tokenizer"})
# llama.cpp pre-tokenizers (tokenizer.ggml.pre) that split every digit on its own before the GPT-2
# regex (llama-vocab.cpp: the "\\p{N}" expression first). transformers' conversion drops that split.
_DIGIT_SPLIT_PRE = frozenset(
    {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"}
)
# llama.cpp removes spaces before punctuation when detokenizing BPE vocabularies ("clean_spaces"),
# except for these pre-tokenizers (SmolLM2's among them).
_KEEP_SPACES_PRE = frozenset(
    {
        "smollm",
        "qwen2",
        "command-r",
        "deepseek-llm",
        "deepseek-coder",
        "deepseek-v3",
        "poro-chat",
        "viking",
        "tekken",
        "chameleon",
    }
)


# ---------------------------------------------------------------------------------------------------
# GGUF header (metadata only; transformers reads the tensors)
# ---------------------------------------------------------------------------------------------------
def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError
    return data


def _read_string(f: BinaryIO) -> bytes:
    (n,) = struct.unpack("<Q", _read_exact(f, 8))
    return _read_exact(f, n)


def _read_value(f: BinaryIO, vtype: int) -> Any:
    if vtype in _SCALAR_FORMATS:
        fmt = _SCALAR_FORMATS[vtype]
        return struct.unpack(fmt, _read_exact(f, struct.calcsize(fmt)))[0]
    if vtype == _STRING:
        return _read_string(f).decode("utf-8", errors="replace")
    if vtype == _ARRAY:
        (etype,) = struct.unpack("<I", _read_exact(f, 4))
        (count,) = struct.unpack("<Q", _read_exact(f, 8))
        # Arrays (the vocabulary, merges, scores) are skipped: only their length is kept.
        if etype in _SCALAR_FORMATS:
            f.seek(count * struct.calcsize(_SCALAR_FORMATS[etype]), 1)
        else:
            for _ in range(count):
                _read_value(f, etype)
        return _ArrayLength(count)
    raise ValueError(f"unknown GGUF value type {vtype}")


class _ArrayLength(int):
    """Stands for a skipped GGUF array in the metadata dict."""


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """The GGUF key/value metadata (arrays replaced by their length); fast, reads no tensor data.

    Raises CheckpointError when the file is not a GGUF v2/v3 file.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"GGUF file {p} does not exist", hint="pass the path of a .gguf file")
    with p.open("rb") as f:
        head = f.read(4)
        if head != _GGUF_MAGIC:
            raise CheckpointError(
                f"{p} is not a GGUF file (it starts with {head!r}, not b'GGUF')",
                hint="pass a llama.cpp .gguf model file (safetensors/PyTorch checkpoints are not GGUF)",
            )
        try:
            (version,) = struct.unpack("<I", _read_exact(f, 4))
            if version < 2:
                raise CheckpointError(
                    f"{p} is GGUF version {version}; only versions 2 and 3 are supported",
                    hint="convert it again with a current llama.cpp (convert_hf_to_gguf.py)",
                )
            _tensor_count, kv_count = struct.unpack("<QQ", _read_exact(f, 16))
            meta: dict[str, Any] = {}
            for _ in range(kv_count):
                key = _read_string(f).decode("utf-8", errors="replace")
                (vtype,) = struct.unpack("<I", _read_exact(f, 4))
                meta[key] = _read_value(f, vtype)
        except (EOFError, ValueError, struct.error) as exc:
            raise CheckpointError(
                f"{p} has a corrupt or truncated GGUF header ({exc or 'unexpected end of file'})",
                hint="download the file again; its size may be short",
            ) from exc
    return meta


def _check_supported(meta: dict[str, Any], path: Path) -> str:
    from transformers.integrations.ggml import GGUF_TO_FAST_CONVERTERS
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    # The weights load when transformers maps the architecture; the tokenizer converts when a converter
    # exists for the model_type transformers derives from it (its own renames below).
    def loadable(arch: str) -> bool:
        renamed = _TRANSFORMERS_RENAMES.get(arch, arch)
        model_ok = arch in GGUF_SUPPORTED_ARCHITECTURES or renamed in GGUF_SUPPORTED_ARCHITECTURES
        return model_ok and arch not in _NOT_ARCHITECTURES and renamed in GGUF_TO_FAST_CONVERTERS

    arch = str(meta.get("general.architecture") or "")
    if not loadable(arch):
        supported = sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if loadable(a))
        raise CheckpointError(
            f"{path} holds a {arch or 'unknown'!r} model, which transformers cannot load from GGUF",
            hint=f"GGUF architectures transformers {_transformers_version()} loads: {', '.join(supported)}",
        )
    return arch


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


# ---------------------------------------------------------------------------------------------------
# Tokenizer repair
# ---------------------------------------------------------------------------------------------------
def _token_at(tok: Any, meta: dict[str, Any], key: str) -> str | None:
    idx = meta.get(key)
    return tok.convert_ids_to_tokens(int(idx)) if isinstance(idx, int) else None


def _repaired_backend(hf_tok: Any, meta: dict[str, Any]) -> Any:
    """The transformers-converted backend tokenizer, fixed to tokenize as llama.cpp does."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors

    state = json.loads(hf_tok.backend_tokenizer.to_str())
    byte_level = meta.get("tokenizer.ggml.model") == "gpt2"
    if byte_level:
        # Every byte is a token of a byte-level vocabulary; byte fallback ("<0x41>" pieces) is
        # SentencePiece's mechanism and never applies.
        state["model"]["byte_fallback"] = False
    backend = Tokenizer.from_str(json.dumps(state))
    if byte_level:
        # llama.cpp normalizes no BPE text (transformers' Qwen2 conversion would apply NFC).
        backend.normalizer = None
        if meta.get("tokenizer.ggml.pre") in _DIGIT_SPLIT_PRE:
            byte_split = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
            backend.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Digits(individual_digits=True), byte_split]
            )
        # Other pre-tokenizers keep transformers' conversion (llama.cpp's table is not ported here).
        backend.decoder = decoders.ByteLevel()
    if meta.get("tokenizer.ggml.add_bos_token") is False or meta.get("tokenizer.ggml.add_eos_token") is True:
        # The converted TemplateProcessing adds BOS unconditionally; rebuild it from the file's flags.
        bos = _token_at(hf_tok, meta, "tokenizer.ggml.bos_token_id")
        eos = _token_at(hf_tok, meta, "tokenizer.ggml.eos_token_id")
        add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", True)) and bos is not None
        add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False)) and eos is not None
        if add_bos or add_eos:
            parts = [*([f"{bos}:0"] if add_bos else []), "$A:0", *([f"{eos}:0"] if add_eos else [])]
            single = " ".join(parts)
            pair = f"{single} " + single.replace("$A:0", "$B:1").replace(":0", ":1")
            used = [t for t, on in ((bos, add_bos), (eos, add_eos)) if on]
            backend.post_processor = processors.TemplateProcessing(
                single=single, pair=pair, special_tokens=[(t, backend.token_to_id(t)) for t in used]
            )
        else:
            backend.post_processor = processors.ByteLevel(trim_offsets=False) if byte_level else None
    return backend


def _clean_spaces(meta: dict[str, Any]) -> bool:
    """Whether decode drops spaces before punctuation, as llama.cpp does for this vocabulary."""
    byte_level = meta.get("tokenizer.ggml.model") == "gpt2"
    return byte_level and meta.get("tokenizer.ggml.pre") not in _KEEP_SPACES_PRE


def _build_tokenizer(hf_tok: Any, meta: dict[str, Any], model_max_length: int) -> Any:
    from transformers import PreTrainedTokenizerFast

    vocab = hf_tok.get_vocab()
    chat_template = meta.get("tokenizer.chat_template") or hf_tok.chat_template
    gguf_eos = _token_at(hf_tok, meta, "tokenizer.ggml.eos_token_id")
    # A chat model ends its turn with <|im_end|>, whatever the file names as eos.
    eos = IM_END if IM_END in vocab else gguf_eos
    tok = PreTrainedTokenizerFast(
        tokenizer_object=_repaired_backend(hf_tok, meta),
        bos_token=_token_at(hf_tok, meta, "tokenizer.ggml.bos_token_id"),
        eos_token=eos,
        unk_token=_token_at(hf_tok, meta, "tokenizer.ggml.unknown_token_id"),
        pad_token=_token_at(hf_tok, meta, "tokenizer.ggml.padding_token_id"),
        chat_template=chat_template,
        clean_up_tokenization_spaces=_clean_spaces(meta),
        model_max_length=model_max_length,
    )
    missing = [t for t in dict.fromkeys(REQUIRED_SPECIAL_TOKENS) if t not in vocab]
    if missing:
        tok.add_special_tokens(
            {"additional_special_tokens": missing}, replace_additional_special_tokens=False
        )
    return tok


# ---------------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------------
def _init_new_tokens_to_mean(model: Any, new_size: int, new_ids: list[int]) -> None:
    """Grow the embedding table to `new_size` rows and set the rows of the added tokens (input, and
    output when untied) to the mean of the old rows.

    HF's `mean_resizing` samples around that mean with a tiny covariance; the exact mean is the same
    initialization without randomness, so imports are reproducible. The added tokens can also land in
    rows that already exist (checkpoints whose table is padded past the vocabulary, like Qwen2's);
    those untrained rows get the mean as well.
    """
    import torch

    old_in = model.get_input_embeddings().weight.detach().clone()
    out_emb = model.get_output_embeddings()
    tied = out_emb is not None and out_emb.weight is model.get_input_embeddings().weight
    old_out = None if out_emb is None or tied else out_emb.weight.detach().clone()
    old_bias = getattr(out_emb, "bias", None) if old_out is not None else None
    old_bias = old_bias.detach().clone() if old_bias is not None else None
    old_size = old_in.shape[0]
    if new_size > old_size:
        model.resize_token_embeddings(new_size, mean_resizing=False)
    rows = torch.tensor(sorted(set(new_ids) | set(range(old_size, new_size))), dtype=torch.long)
    if rows.numel() == 0:
        return
    with torch.no_grad():
        model.get_input_embeddings().weight[rows] = old_in.mean(dim=0)
        if old_out is not None:
            model.get_output_embeddings().weight[rows] = old_out.mean(dim=0)
        if old_bias is not None:
            model.get_output_embeddings().bias[rows] = old_bias.mean()


# ---------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------
def import_gguf_llm(
    gguf_path: str | Path,
    out_llm_dir: str | Path,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Convert a GGUF causal LM into an HF `llm/` folder (fp32); returns the written config.json dict.

    `progress` is called with each of `STAGES` as it starts (loading takes some seconds).
    """
    report = progress or (lambda stage: None)
    path = Path(gguf_path)
    report(STAGES[0])
    meta = read_gguf_metadata(path)
    report(STAGES[1])
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingDependencyError(
            f"GGUF import needs torch, transformers, gguf and accelerate ({exc})",
            hint="pip install 'vinci-edge[export]'",
        ) from exc
    _check_supported(meta, path)

    folder, name = str(path.parent), path.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        report(STAGES[2])
        hf_tok = AutoTokenizer.from_pretrained(folder, gguf_file=name, config=config)
        report(STAGES[3])
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, config=config, dtype=torch.float32
        )
    except (ValueError, KeyError, NotImplementedError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"transformers could not load {path} as a causal LM: {exc}",
            hint="the GGUF architecture or its tokenizer type is not supported by this transformers version",
        ) from exc

    report(STAGES[4])
    max_len = int(getattr(config, "max_position_embeddings", 0) or 32768)
    tokenizer = _build_tokenizer(hf_tok, meta, max_len)
    new_ids = [i for i in tokenizer.get_added_vocab().values() if i >= len(hf_tok)]
    _init_new_tokens_to_mean(model, len(tokenizer), new_ids)
    eos_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id = eos_id
        cfg.bos_token_id = tokenizer.bos_token_id
        cfg.pad_token_id = tokenizer.pad_token_id

    report(STAGES[5])
    out = Path(out_llm_dir)
    out.mkdir(parents=True, exist_ok=True)
    # A template file left by an earlier save would take priority over the one written below.
    (out / "chat_template.jinja").unlink(missing_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    # The template stays inside tokenizer_config.json (not chat_template.jinja), where every reader of
    # a checkpoint's llm/ folder, including older transformers, finds it.
    tokenizer.save_pretrained(out, save_jinja_files=False)
    saved = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    if saved.get("chat_template") != tokenizer.chat_template:
        raise CheckpointError(f"the chat template was not saved to {out / 'tokenizer_config.json'}")
    return json.loads((out / "config.json").read_text(encoding="utf-8"))
