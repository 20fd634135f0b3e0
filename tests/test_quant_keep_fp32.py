"""--keep-fp32: named decoder layer kinds stay fp32 in static int8 / fp8; restoring a kind to fp32
after quantizing equals excluding it (the sensitivity sweep's shortcut); `auto` sweeps and keeps
what it chose.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from quant_helpers import _manifest, _weight_matmul_names


def test_keep_fp32_leaves_the_named_decoder_layers_unquantized(tiny_engine, calib, tmp_path):
    """--keep-fp32 down_proj: the MLP down projections (nodes `l<i>.mlp_out`) keep their fp32 weight
    and see no quantizer; every other decoder linear layer (but the head) is still Q/DQ."""
    pytest.importorskip("modelopt.onnx.quantization", reason="ModelOpt precisions need [quant]")
    from vinci_edge.quantization import graph as g
    from vinci_edge.quantization.quantize import quantize_engine

    out = tmp_path / "int8-keep"
    quantize_engine(tiny_engine, out, "decoder=int8", keep_fp32=["down_proj"], **calib)
    manifest = _manifest(out)
    assert manifest["quantization"]["keep_fp32"] == ["down_proj"]
    assert manifest["precision"]["decoder"]["details"]["kept_fp32"] == ["down_proj"]
    model = g.load(out / "decoder.onnx")
    prod, inits = g.producers(model), g.initializer_map(model)
    kept = [n for n in model.graph.node if n.op_type == "MatMul" and n.name.endswith(".mlp_out")]
    assert kept, "the tiny decoder has MLP down projections"
    for node in kept:
        assert node.input[1] in inits and inits[node.input[1]].data_type == onnx.TensorProto.FLOAT
        assert prod.get(node.input[0]) is None or prod[node.input[0]].op_type != "DequantizeLinear"
    quantized_nodes = (
        {n.name for n in model.graph.node if n.op_type == "MatMul"}
        - {n.name for n in kept}
        - {prod["logits"].name}
    )
    for name in quantized_nodes & _weight_matmul_names(tiny_engine / "decoder.onnx"):
        node = next(n for n in model.graph.node if n.name == name)
        assert prod[node.input[1]].op_type == "DequantizeLinear", name


def _teacher_logits(engine: Path, optimization: str, n: int = 12) -> np.ndarray:
    """Logits of the first n tokens of the real text, fed one at a time through the engine's decoder."""
    from vinci_edge.runtime.backend import SessionSettings
    from vinci_edge.runtime.decoder import OrtDecoder
    from vinci_edge.runtime.engine import Engine

    eng = Engine.load(engine)
    table = eng.embed_table()
    dec = OrtDecoder(
        engine / "decoder.onnx", eng.manifest.decoder, SessionSettings(optimization=optimization)
    )
    return np.stack([dec.append(np.asarray(table[t], np.float32)[None]) for t in range(5, 5 + n)])


def test_restoring_fp32_layers_equals_excluding_them(quantized, tiny_engine, calib, tmp_path):
    """The sensitivity sweep's shortcut: a graph quantized whole with down_proj restored to fp32
    afterwards computes what a graph quantized with down_proj excluded computes ('max' calibration
    runs the fp32 graph, so the other layers' scales do not depend on the exclusion)."""
    pytest.importorskip("modelopt.onnx.quantization", reason="ModelOpt precisions need [quant]")
    from vinci_edge.quantization import graph as g
    from vinci_edge.quantization.quantize import quantize_engine

    excluded = tmp_path / "excluded"
    quantize_engine(tiny_engine, excluded, "decoder=int8", keep_fp32=["down_proj"], **calib)
    whole = g.load(quantized("int8") / "decoder.onnx")
    names = {n.name for n in whole.graph.node if n.op_type == "MatMul" and n.name.endswith(".mlp_out")}
    assert names
    restored = tmp_path / "restored"
    shutil.copytree(excluded, restored)
    g.save(g.restore_fp32(whole, g.load(tiny_engine / "decoder.onnx"), names), restored / "decoder.onnx")
    want, got = _teacher_logits(excluded, "basic"), _teacher_logits(restored, "basic")
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    # ... and it is not the fully quantized graph
    assert np.abs(_teacher_logits(quantized("int8"), "basic") - want).max() > 1e-4 * np.abs(want).max()


def test_keep_fp32_auto_sweeps_and_keeps_what_it_chose(tiny_engine, calib, tmp_path):
    """--keep-fp32 auto: perplexity on calibration text for fp32, all quantized and each kind
    restored; the chosen kinds are the ones left fp32 in the graph and the record says why."""
    pytest.importorskip("modelopt.onnx.quantization", reason="ModelOpt precisions need [quant]")
    from vinci_edge.quantization import graph as g
    from vinci_edge.quantization.modelopt_onnx import DECODER_LAYERS
    from vinci_edge.quantization.quantize import quantize_engine

    out = tmp_path / "int8-auto"
    steps: list[str] = []
    quantize_engine(tiny_engine, out, "decoder=int8", keep_fp32=["auto"], progress=steps.append, **calib)
    manifest = _manifest(out)
    assert manifest["quantization"]["keep_fp32"] == ["auto"]
    details = manifest["precision"]["decoder"]["details"]
    sweep = details["sensitivity"]
    trials = {tuple(t["keep_fp32"]): t for t in sweep["trials"]}
    assert () in trials and all((k,) in trials for k in DECODER_LAYERS)
    assert sweep["fp32_perplexity"] > 1
    for t in trials.values():
        assert t["perplexity"] > 1
        assert t["change_pct"] == pytest.approx(
            100 * (t["perplexity"] / sweep["fp32_perplexity"] - 1), abs=0.01
        )
        lo, hi = t["ci95_pct"]
        assert lo <= t["change_pct"] <= hi
    # the sweep's fp32 figure is the runtime's teacher-forced perplexity of its window
    from vinci_edge.quantization.accuracy.stats import perplexity
    from vinci_edge.quantization.accuracy.teacher_forcing import teacher_forced_logits
    from vinci_edge.quantization.sensitivity import sweep_window
    from vinci_edge.runtime.pipeline import Pipeline

    sources = manifest["precision"]["decoder"]["calibration"]
    window = sweep_window(tiny_engine, sources["texts"], sources["seed"])
    assert len(window) == sweep["window_tokens"]
    logits = teacher_forced_logits(Pipeline.from_engine(tiny_engine), window, "fp32", lambda s: None)
    assert sweep["fp32_perplexity"] == pytest.approx(perplexity(logits, np.asarray(window[1:])), rel=1e-3)
    chosen = tuple(sweep["chosen"])
    assert details["kept_fp32"] == list(chosen) and chosen in trials
    # judged by the interval's upper end, not the point estimate
    assert sweep["within_budget"] == (trials[chosen]["ci95_pct"][1] <= 100 * sweep["budget"])
    if chosen:  # each step of the greedy choice improved on the one before
        assert trials[chosen]["perplexity"] < trials[()]["perplexity"]
    else:  # nothing kept: quantizing everything was already within budget, or no kind helped alone
        assert sweep["within_budget"] or all(
            trials[(k,)]["perplexity"] >= trials[()]["perplexity"] for k in DECODER_LAYERS
        )
    assert any("sensitivity" in s for s in steps)
    model = g.load(out / "decoder.onnx")
    prod, inits = g.producers(model), g.initializer_map(model)
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.name == prod["logits"].name:
            continue
        kept = node.name.endswith(tuple(DECODER_LAYERS[k] for k in chosen)) if chosen else False
        weight_is_fp32 = node.input[1] in inits and inits[node.input[1]].data_type == onnx.TensorProto.FLOAT
        assert weight_is_fp32 == kept, node.name
