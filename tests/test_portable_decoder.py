"""The portable decoder graph (standard ONNX operators, explicit KV cache: TensorRT's) against the
fused one (ONNX Runtime's GroupQueryAttention), both through the runtime's own decoders.

Parity: prefill logits within 1e-5 relative (max |portable - fused| / max |fused|) and identical
greedy tokens, on the tiny preset and on the real SmolLM2-135M-Instruct (64 tokens). The graph: only
standard operators, onnx.checker-clean, the fused graph's weights file shared (no copy).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from vinci_edge.errors import EngineError
from vinci_edge.export.decoder_portable import PORTABLE_FILE, nonstandard_ops
from vinci_edge.generation import GenerationConfig
from vinci_edge.manifest import FUSED, PORTABLE, Manifest
from vinci_edge.runtime.decoder import OrtDecoder
from vinci_edge.runtime.decoder_portable import PortableDecoder
from vinci_edge.runtime.pipeline import Pipeline

RTOL = 1e-5


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _pair(engine, **kwargs) -> tuple[Pipeline, Pipeline]:
    return (
        Pipeline.from_engine(engine, decoder=FUSED, threads=2, **kwargs),
        Pipeline.from_engine(engine, decoder=PORTABLE, threads=2, **kwargs),
    )


# ---- the graph ------------------------------------------------------------------------------------
def test_graph_is_standard_onnx_and_shares_the_fused_weights(tiny_engine):
    manifest = Manifest.read(tiny_engine)
    entry = manifest.decoder_for("tensorrt")
    assert entry.file == PORTABLE_FILE and entry.decoder.attention == "portable"
    path = tiny_engine / PORTABLE_FILE
    onnx.checker.check_model(str(path))  # with its external data, resolved beside it
    model = onnx.load(str(path), load_external_data=False)
    assert nonstandard_ops(model) == []
    assert not any(n.domain == "com.microsoft" for n in model.graph.node)
    assert {o.domain for o in model.opset_import} == {""}
    names = [i.name for i in model.graph.input]
    assert names == entry.decoder.input_names() and "seqlens_k" not in names
    # every weight in external data points into the fused graph's file, at the fused graph's offsets
    fused = onnx.load(str(tiny_engine / "decoder.onnx"), load_external_data=False)
    where = {t.name: list(t.external_data) for t in fused.graph.initializer if t.external_data}
    ours = {t.name: list(t.external_data) for t in model.graph.initializer if t.external_data}
    assert ours and ours == where
    assert entry.external_data == "decoder.onnx.data"
    assert not (tiny_engine / (PORTABLE_FILE + ".data")).exists()


def test_manifest_selects_the_graph_per_backend(tiny_engine, tmp_path):
    manifest = Manifest.read(tiny_engine)
    assert manifest.decoder_graph_names == [FUSED, PORTABLE]
    for backend in ("ort-cpu", "ort-cuda"):
        assert manifest.decoder_for(backend) is manifest.stages["decoder"]
    assert manifest.decoder_for("tensorrt") is manifest.decoder_graphs[PORTABLE]
    with pytest.raises(EngineError, match="unknown backend"):
        manifest.decoder_for("vulkan")
    # an engine exported before the portable graph: loads, runs fused, refuses TensorRT's graph
    old = tmp_path / "old"
    shutil.copytree(tiny_engine, old)
    data = json.loads((old / "manifest.json").read_text())
    del data["decoder_graphs"]
    (old / "manifest.json").write_text(json.dumps(data))
    (old / PORTABLE_FILE).unlink()
    legacy = Manifest.read(old)
    assert legacy.decoder_graph_names == [FUSED] and legacy.decoder_for("ort-cpu").file == "decoder.onnx"
    with pytest.raises(EngineError, match="no portable decoder graph") as exc:
        legacy.decoder_for("tensorrt")
    assert "re-export" in exc.value.hint
    with pytest.raises(EngineError, match="no portable decoder graph"):
        Pipeline.from_engine(old, decoder=PORTABLE)
    # a recorded graph whose file is gone is refused when the engine loads
    (old / "manifest.json").write_text((tiny_engine / "manifest.json").read_text())
    with pytest.raises(EngineError, match=f"{PORTABLE_FILE} is missing"):
        Pipeline.from_engine(old)


# ---- parity through the runtime -------------------------------------------------------------------
def test_tiny_prefill_steps_and_rewind_match_the_fused_decoder(tiny_engine):
    fused, portable = _pair(tiny_engine)
    f, p = fused.decoder, portable.decoder
    assert isinstance(f, OrtDecoder) and isinstance(p, PortableDecoder)
    embeds = np.random.default_rng(0).standard_normal((9, fused.cfg.hidden_size)).astype(np.float32) * 0.1
    assert _rel(p.prefill(embeds[:6]), f.prefill(embeds[:6])) < RTOL
    for token in (5, 17, 3):
        assert _rel(p.step(token), f.step(token)) < RTOL
    f.rewind(4), p.rewind(4)  # a live question rolled back: the graph sees P = 4 again
    assert _rel(p.append(embeds[6:]), f.append(embeds[6:])) < RTOL
    assert p.length == f.length == 7
    twin = p.sibling()
    assert twin.length == 0 and _rel(twin.prefill(embeds[:6]), f.prefill(embeds[:6])) < RTOL


def test_tiny_greedy_answer_and_cli_are_identical(tiny_engine, clip, capsys):
    from vinci_edge.cli import run

    gen = GenerationConfig(max_new_tokens=16, ignore_eos=True)
    fused, portable = _pair(tiny_engine)
    a = fused.ask("What happens?", gen, video=clip)
    b = portable.ask("What happens?", gen, video=clip)
    assert b.token_ids == a.token_ids and b.extra["decoder_graph"] == PORTABLE

    argv = ["run", "--engine", str(tiny_engine), "--prompt", "Hi", "--max-new-tokens", "6", "--json"]
    answers = []
    for graph in (FUSED, PORTABLE):
        assert run([*argv, "--decoder", graph]) == 0
        answers.append(json.loads(capsys.readouterr().out))
    assert answers[0]["token_ids"] == answers[1]["token_ids"]


def test_smollm2_prefill_logits_and_64_greedy_tokens(smol_engine):
    fused, portable = _pair(smol_engine)
    prompt = fused.prepare("Name three colours of the rainbow and say why the sky is blue.")
    embeds = fused.inputs_embeds(prompt, fused.metrics_factory())
    assert _rel(portable.decoder.prefill(embeds), fused.decoder.prefill(embeds)) < RTOL

    gen = GenerationConfig(max_new_tokens=64, ignore_eos=True)
    question = "Write a short story about a robot who learns to paint."
    a, b = fused.ask(question, gen), portable.ask(question, gen)
    assert len(a.token_ids) == 64 and b.token_ids == a.token_ids
