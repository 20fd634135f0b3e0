"""Float-minimum 4-bit blocks (quantization/float_min.py) in real ONNX Runtime MatMulNBits sessions."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from vinci_edge.quantization import float_min  # noqa: E402
from vinci_edge.quantization import graph as g  # noqa: E402


def _linear_model(weights: list[np.ndarray], shared_input: bool = True) -> onnx.ModelProto:
    """y_i = x @ W_i for each weight (K, N_i); all read x (or each its own input)."""
    k = weights[0].shape[0]
    nodes, inits, inputs, outputs = [], [], [], []
    for i, w in enumerate(weights):
        x = "x" if shared_input else f"x{i}"
        if not shared_input or i == 0:
            inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, ["rows", k]))
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"y{i}"], f"layer{i}"))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["rows", w.shape[1]]))
    graph = helper.make_graph(nodes, "linear", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """Both quantizers edit the graph they get in place."""
    return onnx.ModelProto.FromString(model.SerializeToString())


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _q4_1_weights(rng: np.random.Generator, k: int, n: int, block: int) -> np.ndarray:
    """(K, N) weights as a Q4_1 GGUF stores them: per output and block of inputs, 16 levels from a
    float minimum, which is not a whole number of steps below 0."""
    nb = -(-k // block)
    q = rng.integers(0, 16, size=(n, nb, block))
    q[..., 0], q[..., 1] = 0, 15  # every block spans all 16 levels
    step = rng.uniform(0.002, 0.02, size=(n, nb, 1))
    low = -step * rng.uniform(0.5, 14.5, size=(n, nb, 1))  # trained weights' blocks straddle 0
    return (low + step * q).reshape(n, -1)[:, :k].T.copy()


@pytest.mark.parametrize("k,block", [(96, 32), (80, 32), (96, 16)])
def test_weights_on_a_4bit_grid_with_a_float_minimum_are_reproduced(k, block):
    """What integer zero points cannot do: with fp32 compute (accuracy_level 0) the layer equals the
    fp32 one up to the 4-bit rounding of the small correction coefficients; K = 80 is not a whole
    number of blocks."""
    rng = np.random.default_rng(0)
    w = _q4_1_weights(rng, k, 48, block)
    x = rng.standard_normal((5, k)).astype(np.float32)
    ref = x @ w
    exact = float_min.dequantize(float_min.quantize(w.T, block))[:, :k].T
    np.testing.assert_allclose(exact, w, atol=1e-6)  # before the correction is itself quantized

    model = _linear_model([w])
    got = _run(float_min.replace_matmuls(_copy(model), ["layer0"], block, accuracy_level=0)[0], {"x": x})[0]
    rtn = _run(g.matmul_nbits(model, 4, block, symmetric=False), {"x": x})[0]  # integer zero points
    err, rtn_err = np.abs(got - ref).max(), np.abs(rtn - ref).max()
    assert err < 0.1 * rtn_err, (err, rtn_err)
    assert err < 5e-3 * np.abs(ref).max()  # the correction coefficients are 4-bit too


def test_int8_activations_keep_the_layer_close():
    """accuracy_level 4 (what `int4` uses on the CPU) quantizes the inputs, and the block sums with
    them, to int8 per block: still far nearer than integer zero points."""
    rng = np.random.default_rng(1)
    w = _q4_1_weights(rng, 128, 64, 32)
    x = rng.standard_normal((7, 128)).astype(np.float32)
    ref = x @ w
    model = _linear_model([w])
    got = _run(float_min.replace_matmuls(_copy(model), ["layer0"], 32, accuracy_level=4)[0], {"x": x})[0]
    rtn = _run(g.matmul_nbits(model, 4, 32, symmetric=False), {"x": x})[0]
    assert np.abs(got - ref).mean() < 0.25 * np.abs(rtn - ref).mean()


def test_on_weights_off_any_grid_it_rounds_no_worse_than_integer_zero_points():
    """Gaussian weights (a bf16 checkpoint's situation): round-to-nearest with a float minimum has
    a lower weight error than with an integer zero point, block for block."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((256, 64)).astype(np.float32) * 0.05
    eye = np.eye(256, dtype=np.float32)  # x = I reads the effective weights back
    model = _linear_model([w])
    fmin_model, on_grid = float_min.replace_matmuls(_copy(model), ["layer0"], 32, accuracy_level=0)
    assert on_grid == 0.0  # no block was on a 4-bit grid
    fmin = _run(fmin_model, {"x": eye})[0]
    rtn = _run(g.matmul_nbits(model, 4, 32, symmetric=False), {"x": eye})[0]
    fmin_mse, rtn_mse = np.mean((fmin - w) ** 2), np.mean((rtn - w) ** 2)
    assert fmin_mse < rtn_mse, (fmin_mse, rtn_mse)


def test_layers_reading_one_input_share_its_block_sums():
    rng = np.random.default_rng(3)
    shared = _linear_model([_q4_1_weights(rng, 64, 32, 32), _q4_1_weights(rng, 64, 16, 32)])
    out, on_grid = float_min.replace_matmuls(shared, ["layer0", "layer1"], 32, accuracy_level=4)
    assert on_grid == 1.0  # Q4_1 weights: every block was already on a 4-bit grid
    ops = g.op_counts(out)
    assert ops["MatMulNBits"] == 2 and ops["ReduceSum"] == 1 and ops["Concat"] == 1, ops
    # the block sums are arithmetic of the quantized layers, not linear layers to quantize again
    assert g.weight_matmuls(out) == []
    own = _linear_model([_q4_1_weights(rng, 64, 32, 32)] * 2, shared_input=False)
    assert g.op_counts(float_min.replace_matmuls(own, ["layer0", "layer1"], 32, 4)[0])["Concat"] == 2


def test_float16_graphs_stay_float16():
    """An fp16 engine (export --dtype float16): the scales take the graph's type (MatMulNBits wants
    them in the activations' type), the block sums are fp16 too, and the result stays close."""
    rng = np.random.default_rng(4)
    w = _q4_1_weights(rng, 96, 48, 32).astype(np.float16)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w0"], ["y"], "layer0")],
        "fp16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["rows", 96])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["rows", 48])],
        [numpy_helper.from_array(w, "w0")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out, _ = float_min.replace_matmuls(model, ["layer0"], 32, accuracy_level=4)
    assert {t.data_type for t in out.graph.initializer if "scales" in t.name} == {TensorProto.FLOAT16}
    x = rng.standard_normal((5, 96)).astype(np.float16)
    ref = x.astype(np.float32) @ w.astype(np.float32)
    got = _run(out, {"x": x})[0]
    assert got.dtype == np.float16
    assert np.abs(got - ref).max() < 2e-2 * np.abs(ref).max()


def test_blocks_of_one_sign_fall_back_to_an_integer_zero_point():
    """Far from 0 the float zero point leaves 0..15; such a block is rounded like plain asymmetric
    RTN (range widened to 0) instead of getting a correction many steps large."""
    w_t = np.concatenate([np.linspace(0.5, 0.6, 32), np.linspace(-0.1, 0.2, 32)])[None]
    b = float_min.quantize(w_t, 32)
    assert b.correction[0, 0] == 0 and b.zero[0, 0] == 0  # [0.5, 0.6] -> range [0, 0.6]
    assert abs(b.correction[0, 1]) <= b.scale[0, 1] / 2 + 1e-12
    err = np.abs(float_min.dequantize(b) - w_t)
    assert err[0, :32].max() <= b.scale[0, 0] / 2 + 1e-12 and err[0, 32:].max() <= b.scale[0, 1] / 2 + 1e-12


def test_refuses_names_that_are_not_linear_layers():
    model = _linear_model([np.ones((32, 8), np.float32)])
    with pytest.raises(ValueError, match="not weight MatMuls"):
        float_min.replace_matmuls(model, ["layer0", "attention"], 32, 4)


def _decoder_like(k: int, n: int, rng: np.random.Generator, shaped: bool) -> onnx.ModelProto:
    """(batch, seq, K) -> norm-like op -> linear: the decoder's situation. Without `shaped` the
    input's rank is not declared."""
    w = _q4_1_weights(rng, k, n, 32).astype(np.float32)
    dims = ["batch", "seq", k] if shaped else None
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["h"], ["x"]), helper.make_node("MatMul", ["x", "w0"], ["y"], "layer0")],
        "decoder_like",
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w0")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_block_sums_by_reshape_and_by_matrix_agree():
    """Where the input's rank is known and K is whole blocks the sums come from Reshape + ReduceSum
    (fewer, cheaper nodes); otherwise from the 0/1 matrix. Both run the same layer."""
    rng = np.random.default_rng(5)
    shaped = _decoder_like(128, 40, rng, shaped=True)
    unshaped = _copy(shaped)
    unshaped.graph.input[0].type.tensor_type.ClearField("shape")
    viewed, _ = float_min.replace_matmuls(shaped, ["layer0"], 32, accuracy_level=0)
    summed, _ = float_min.replace_matmuls(unshaped, ["layer0"], 32, accuracy_level=0)
    assert "ReduceSum" in g.op_counts(viewed) and "ReduceSum" not in g.op_counts(summed)
    assert g.op_counts(summed)["MatMul"] == 1  # x @ Bsum
    h = rng.standard_normal((2, 3, 128)).astype(np.float32)
    a, b = _run(viewed, {"h": h})[0], _run(summed, {"h": h})[0]
    assert a.shape == b.shape == (2, 3, 40)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_ranks_follow_the_hidden_states():
    model = _decoder_like(64, 16, np.random.default_rng(6), shaped=True)
    assert g.ranks(model)["x"] == 3 and g.ranks(model)["y"] == 3
    model.graph.input[0].type.tensor_type.ClearField("shape")
    assert "x" not in g.ranks(model)
