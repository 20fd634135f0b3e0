"""`int8-compute` (quantization/int8_compute.py): integer GEMMs where they pay, one int8 weights file.

The tiny engine quantized once (the session's `quantized` fixture, --int8-range reduced), and once
more at --int8-range full. Its accuracy against fp32 on the real clip is in test_quant_precisions.py
(COSINE_FLOOR); here: which kernels sit where, that the two decoder graphs share one weights file
byte for byte, that the runtime sends prompts to the prefill graph and decode steps to the other,
and what is refused.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from quant_helpers import _manifest, _weight_matmul_names, cosine

from vinci_edge.errors import ConfigError, EngineError
from vinci_edge.manifest import Manifest, PrefillGraph
from vinci_edge.quantization import graph as g
from vinci_edge.quantization.int8_compute import (
    PREFILL_BLOCKWISE,
    PREFILL_FILE,
    PREFILL_MIN,
    Int8Compute,
    layer_kind,
)
from vinci_edge.runtime.integer_gemm import check_integer_gemm


def _ops(path) -> dict[str, int]:
    return g.op_counts(onnx.load(str(path), load_external_data=False))


def _external(path) -> dict[str, tuple]:
    """initializer name -> (location, offset, length) of the tensors stored outside the graph."""
    out = {}
    for t in onnx.load(str(path), load_external_data=False).graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            ext = {e.key: e.value for e in t.external_data}
            out[t.name] = (ext["location"], int(ext.get("offset", 0)), int(ext["length"]))
    return out


def test_towers_run_integer_gemms_on_every_linear_layer(quantized, tiny_engine):
    engine = quantized("int8-compute")
    for stage in ("vision", "audio"):
        ops = _ops(engine / f"{stage}.onnx")
        linear = len(_weight_matmul_names(tiny_engine / f"{stage}.onnx"))
        integer = ops.get("DynamicQuantizeMatMul", 0) + ops.get("MatMulInteger", 0)
        assert integer == linear, (stage, ops)
        rec = _manifest(engine)["precision"][stage]["details"]
        assert rec["layers"]["linear"]["count"] == linear
        assert "per-tensor" in rec["layers"]["linear"]["activations"]
        assert rec["int8_range"] == "reduced"


def test_decoder_decode_graph_is_weight_only_and_prefill_graph_is_integer(quantized, tiny_engine):
    engine = quantized("int8-compute")
    linear = len(_weight_matmul_names(tiny_engine / "decoder.onnx"))  # layers + the head
    decode, prefill = _ops(engine / "decoder.onnx"), _ops(engine / PREFILL_FILE)
    assert (
        decode.get("MatMulNBits") == linear
        and "MatMul" not in decode
        and "MatMulIntegerToFloat" not in decode
    )
    names = _weight_matmul_names(tiny_engine / "decoder.onnx")
    blockwise = sum(1 for n in names if layer_kind(n) in PREFILL_BLOCKWISE)
    # every layer but the head (one position) and the block-wise kinds (q/k/v, gate/up)
    assert PREFILL_BLOCKWISE == ("qkv", "gate_up") and blockwise > 0
    assert prefill.get("MatMulIntegerToFloat") == linear - 1 - blockwise
    assert prefill.get("MatMulNBits") == 1 + blockwise and "MatMul" not in prefill
    man = Manifest.read(engine)
    # the activation range the runtime checks the CPU's integer GEMM at (--int8-range reduced: 63)
    assert man.stages["decoder"].prefill == PrefillGraph(
        PREFILL_FILE, PREFILL_MIN, activation_levels=63, integer_kernel="MatMulIntegerToFloat"
    )
    layers = man.precision["decoder"]["details"]["layers"]
    assert set(layers) == {"qkv", "o_proj", "gate_up", "down_proj", "lm_head"}
    assert "per-token" in layers["down_proj"]["prefill"]["activations"]
    assert layers["qkv"]["prefill"]["kernel"].startswith("MatMulNBits")
    assert layers["gate_up"]["prefill"]["kernel"].startswith("MatMulNBits")
    assert layers["down_proj"]["decode"]["kernel"].startswith("MatMulNBits")


def test_the_two_decoder_graphs_share_one_weights_file(quantized, tiny_engine):
    """Weights once: every int8 weight of the prefill graph is the decode graph's, the same byte range
    of decoder.onnx.data; no fp32 copy of a linear layer remains anywhere."""
    engine = quantized("int8-compute")
    decode, prefill = _external(engine / "decoder.onnx"), _external(engine / PREFILL_FILE)
    weights = {n for n in prefill if n.endswith(".w_u8")}
    assert len(weights) == len(_weight_matmul_names(tiny_engine / "decoder.onnx")) - 1
    assert all(prefill[n] == decode[n] for n in weights)
    assert {loc for loc, _, _ in prefill.values()} == {"decoder.onnx.data"}
    assert not (engine / (PREFILL_FILE + ".data")).exists()
    fp32_names = {
        t.name
        for t in onnx.load(str(tiny_engine / "decoder.onnx"), load_external_data=False).graph.initializer
    }
    for graph in ("decoder.onnx", PREFILL_FILE):
        model = onnx.load(str(engine / graph), load_external_data=False)
        left = {t.name for t in model.graph.initializer} & fp32_names
        assert not any(n.endswith(("_w", ".qkv_w")) for n in left), left
    # the int8 weights are what the data file holds: about a quarter of the fp32 decoder's bytes
    assert g.stage_bytes(engine, "decoder.onnx") < 0.45 * g.stage_bytes(tiny_engine, "decoder.onnx")


def test_matmulnbits_weights_have_the_shape_its_specification_gives(quantized):
    """MatMulNBits' B is (N, K / block, block bytes): ONNX Runtime 1.24 took a 2-D (N, K) one, later
    releases refuse the graph ("B initializer shape ... does not match attribute-derived shape")."""
    engine = quantized("int8-compute")
    for graph in ("decoder.onnx", PREFILL_FILE):
        model = onnx.load(str(engine / graph), load_external_data=False)
        shapes = {t.name: list(t.dims) for t in model.graph.initializer}
        nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
        assert nbits
        for node in nbits:
            attrs = {a.name: a.i for a in node.attribute}
            block = attrs["block_size"]
            blob = block * attrs["bits"] // 8
            assert shapes[node.input[1]] == [attrs["N"], -(-attrs["K"] // block), blob], node.name


def test_prompts_run_the_prefill_graph_and_steps_the_decode_graph(quantized, tiny_engine, stage_inputs):
    from vinci_edge.runtime.pipeline import Pipeline

    if not check_integer_gemm(63).exact:
        pytest.skip("this CPU's integer GEMM is not exact: no prefill graph here (test_integer_gemm.py)")
    embeds = stage_inputs["decoder"]["embeds"]
    assert embeds.shape[0] >= PREFILL_MIN
    dec = Pipeline.from_engine(quantized("int8-compute")).decoder
    ref = Pipeline.from_engine(tiny_engine).decoder
    calls = {"prefill": 0, "decode": 0}
    for attr, key in (("prefill_session", "prefill"), ("session", "decode")):
        session = getattr(dec, attr)
        run = session.run_with_iobinding

        def counted(io, *a, run=run, key=key, **k):
            calls[key] += 1
            return run(io, *a, **k)

        session.run_with_iobinding = counted
    dec.reset()
    ref.reset()
    rows = [dec.append(embeds).copy()]
    want = [ref.append(embeds).copy()]
    for tok in stage_inputs["decoder"]["tokens"][:3]:  # decode steps continue the prefill's KV cache
        rows.append(dec.step(tok).copy())
        want.append(ref.step(tok).copy())
    assert calls == {"prefill": 1, "decode": 3}
    # --int8-range reduced: 63 levels per position at prefill. Measured on this clip, worst row of
    # the prefill + 5 steps: 0.984 (0.996 with the decode graph alone; 0.996 at --int8-range full).
    assert cosine(np.stack(rows), np.stack(want)) >= 0.97
    # a short append (under min_positions) is a decode-graph call
    dec.append(embeds[: PREFILL_MIN - 1])
    assert calls == {"prefill": 1, "decode": 4}


def test_full_range_is_recorded_and_stays_close(tiny_engine, stage_inputs, fp32_outputs, tmp_path):
    from quant_helpers import stage_outputs

    from vinci_edge.quantization.quantize import quantize_engine

    out = tmp_path / "full"
    quantize_engine(tiny_engine, out, "int8-compute", int8_range="full")
    man = _manifest(out)
    assert man["quantization"]["int8_range"] == "full"
    assert man["precision"]["decoder"]["details"]["int8_range"] == "full"
    got = stage_outputs(out, stage_inputs)
    for key, ref in fp32_outputs.items():
        assert cosine(got[key], ref) >= (0.995 if key == "decoder" else 0.999), key


def test_per_token_towers_are_a_switch(tiny_engine, tmp_path):
    from vinci_edge.quantization.quantize import quantize_engine

    out = tmp_path / "pt"
    quantize_engine(
        tiny_engine, out, "vision=int8-compute", handlers={"int8-compute": Int8Compute("per-token")}
    )
    ops = _ops(out / "vision.onnx")
    assert ops.get("MatMulIntegerToFloat") == len(_weight_matmul_names(tiny_engine / "vision.onnx"))
    rec = _manifest(out)["precision"]["vision"]["details"]["layers"]["linear"]
    assert "per-token" in rec["activations"]


def test_refusals(tiny_engine, tmp_path):
    from vinci_edge.quantization.quantize import quantize_engine

    with pytest.raises(ConfigError, match="--int8-range applies to int8-compute"):
        quantize_engine(tiny_engine, tmp_path / "a", "int4", int8_range="full")
    with pytest.raises(ConfigError, match="--int8-range 'wide'"):
        quantize_engine(tiny_engine, tmp_path / "b", "int8-compute", int8_range="wide")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ValueError):
        Int8Compute(prefill_min=1)
    with pytest.raises(ValueError):
        Int8Compute("per-row")


def test_cli_int8_range_is_a_choice(tmp_path, capsys):
    from vinci_edge.cli import run

    argv = ["quantize", "--engine", str(tmp_path / "e"), "--out", str(tmp_path / "o"), "--precision"]
    assert run([*argv, "int8-compute", "--int8-range", "wide"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "argument --int8-range: invalid choice: 'wide'" in err[0] and len(err) == 2


def test_manifest_prefill_entry_is_optional_and_checked(quantized, tmp_path):
    engine = quantized("int8-compute")
    data = json.loads((engine / "manifest.json").read_text())
    assert data["stages"]["decoder"]["prefill"] == {
        "file": PREFILL_FILE,
        "min_positions": PREFILL_MIN,
        "ort_optimization": "all",
        "activation_levels": 63,
        "integer_kernel": "MatMulIntegerToFloat",
    }
    old = json.loads(json.dumps(data))
    del old["stages"]["decoder"]["prefill"]  # an engine written before the prefill graph
    assert Manifest.from_dict(old).stages["decoder"].prefill is None
    # ... before the range and the operator were recorded (such prefill graphs run MatMulInteger)
    del data["stages"]["decoder"]["prefill"]["activation_levels"]
    del data["stages"]["decoder"]["prefill"]["integer_kernel"]
    old_prefill = Manifest.from_dict(data).stages["decoder"].prefill
    assert old_prefill.activation_levels is None and old_prefill.integer_kernel is None
    data["stages"]["decoder"]["prefill"]["integer_kernel"] = "Gemm"
    with pytest.raises(EngineError, match="integer_kernel 'Gemm' is not one of"):
        Manifest.from_dict(data)
    data["stages"]["decoder"]["prefill"]["integer_kernel"] = "MatMulIntegerToFloat"
    data["stages"]["decoder"]["prefill"]["activation_levels"] = 128
    with pytest.raises(EngineError, match="activation_levels 128 is outside"):
        Manifest.from_dict(data)
    data["stages"]["decoder"]["prefill"]["activation_levels"] = 63
    data["stages"]["decoder"]["prefill"]["min_positions"] = 1
    with pytest.raises(EngineError, match="min_positions 1 is below 2"):
        Manifest.from_dict(data)


def test_layer_kinds():
    assert [layer_kind(n) for n in ("l0.qkv", "l3.o", "l1.gu", "l2.mlp_out", "blocks.0.fc1")] == [
        "qkv",
        "o_proj",
        "gate_up",
        "down_proj",
        "linear",
    ]


def test_a_layer_kind_can_keep_the_block_wise_kernel_in_the_prefill(
    tiny_engine, stage_inputs, fp32_outputs, tmp_path
):
    """`prefill_blockwise`: those kinds' prefill runs the decode graph's MatMulNBits (int8 per block
    of 32 channels) on the same shared tensor; the manifest says so, per kind."""
    from quant_helpers import stage_outputs

    from vinci_edge.quantization.quantize import quantize_engine

    out = tmp_path / "down-blockwise"
    handler = Int8Compute(prefill_blockwise=("down_proj",))  # and not the default's kinds
    quantize_engine(tiny_engine, out, "int8-compute", handlers={"int8-compute": handler})
    names = _weight_matmul_names(tiny_engine / "decoder.onnx")
    down = sum(1 for n in names if layer_kind(n) == "down_proj")
    assert down > 0
    prefill = _ops(out / PREFILL_FILE)
    assert prefill.get("MatMulNBits") == 1 + down  # the head and every down_proj
    assert prefill.get("MatMulIntegerToFloat") == len(names) - 1 - down
    layers = _manifest(out)["precision"]["decoder"]["details"]["layers"]
    assert layers["down_proj"]["prefill"]["kernel"].startswith("MatMulNBits")
    assert "per-token" in layers["gate_up"]["prefill"]["activations"]
    shared = _external(out / PREFILL_FILE)
    assert all(v[0] == "decoder.onnx.data" for v in shared.values())
    got = stage_outputs(out, stage_inputs)
    assert cosine(got["decoder"], fp32_outputs["decoder"]) >= 0.995
    with pytest.raises(ValueError, match="unknown decoder layer kinds"):
        Int8Compute(prefill_blockwise=("attention",))


def test_cli_prefill_blockwise_is_checked_where_it_is_parsed(tiny_engine, tmp_path, capsys):
    from vinci_edge.cli import run
    from vinci_edge.quantization.modelopt_onnx import DECODER_LAYERS

    argv = ["quantize", "--engine", str(tiny_engine), "--out", str(tmp_path / "o"), "--precision"]
    assert run([*argv, "int8-compute", "--int8-prefill-blockwise", "qkv,mlp"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "unknown layer kind 'mlp'" in err[0] and len(err) == 2
    assert run([*argv, "int8-compute", "--int8-prefill-blockwise", "qkv,qkv"]) == 2
    assert "named twice" in capsys.readouterr().err
    assert run([*argv, "int4", "--int8-prefill-blockwise", "qkv"]) == 2
    assert "applies to an int8-compute decoder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    from vinci_edge.cli import build_parser

    quantize = build_parser()._subparsers._group_actions[0].choices["quantize"]
    help_text = " ".join(quantize.format_help().split())
    for kind in DECODER_LAYERS:  # the help names every kind the option takes
        assert kind in help_text, kind


def test_smoothquant_smooths_the_per_position_layers_only(
    tiny_engine, calib, stage_inputs, fp32_outputs, tmp_path
):
    """`--smoothquant` with int8-compute: the calibrated maxima fold into the layers whose prefill
    runs per position; the block-wise kinds (and the head) quantize per block of 32 and stay as
    they are. The decoder stays close to fp32 through both graphs."""
    from quant_helpers import stage_outputs

    from vinci_edge.quantization.quantize import quantize_engine

    out = tmp_path / "sq"
    quantize_engine(tiny_engine, out, "decoder=int8-compute", smoothquant=0.5, **calib)
    record = _manifest(out)["precision"]["decoder"]
    names = _weight_matmul_names(tiny_engine / "decoder.onnx")
    per_position = [n for n in names if layer_kind(n) not in PREFILL_BLOCKWISE and layer_kind(n) != "linear"]
    assert record["details"]["smoothquant"] == {"alpha": 0.5, "smoothed": len(per_position), "skipped": {}}
    assert "SmoothQuant alpha=0.5" in record["method"] and record["calibration"] is not None
    got = stage_outputs(out, {"decoder": stage_inputs["decoder"]})
    assert cosine(got["decoder"], fp32_outputs["decoder"]) >= 0.995  # measured 0.9993
