"""The integer GEMM check (runtime/integer_gemm.py) and what the runtime does with its verdict.

int8-compute's prefill graph is exact integer arithmetic around MatMulIntegerToFloat; whether ONNX
Runtime's kernel for it is exact depends on the CPU. The check runs the real kernel; here it is
compared with a graph built by the `onnx` package, its graph is checked as valid ONNX, and an
int8-compute engine is shown to prefill on its prefill graph where the check passes and on its
decode graph (saying why) where it does not.
"""

from __future__ import annotations

import numpy as np
import pytest

from vinci_edge.runtime import integer_gemm
from vinci_edge.runtime.integer_gemm import FULL_LEVELS, SHAPES, GemmCheck, check_integer_gemm


def _onnx_itof(w: np.ndarray) -> bytes:
    """The check's MatMulIntegerToFloat graph, built by the onnx package."""
    from onnx import TensorProto, helper, numpy_helper

    n, k = w.shape
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(w.T), "B"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.ones(n, np.float32), "ones"),
        numpy_helper.from_array(np.array(128, np.uint8), "zp"),
    ]
    node = helper.make_node(
        "MatMulIntegerToFloat", ["A", "B", "one", "ones", "zp", "zp"], ["Y"], domain="com.microsoft"
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, n])],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8).SerializeToString()


def test_the_check_graphs_are_valid_onnx_and_its_count_is_recounted_through_the_onnx_package():
    import onnxruntime as ort

    onnx = pytest.importorskip("onnx")
    w = np.random.default_rng(3).integers(1, 256, SHAPES[0][:2], dtype=np.uint8)
    for graph in (integer_gemm._itof_graph(w), integer_gemm._integer_graph(w)):
        onnx.checker.check_model(onnx.load_from_string(graph))
    # the same draws as the check, run through a graph the onnx package builds, counted here
    rng = np.random.default_rng(0)
    wrong = 0
    for n, k, m in SHAPES:
        w = rng.integers(1, 256, (n, k), dtype=np.uint8)
        x = rng.integers(-FULL_LEVELS, FULL_LEVELS + 1, (m, k), dtype=np.int8)
        session = ort.InferenceSession(_onnx_itof(w), providers=["CPUExecutionProvider"])
        got = session.run(None, {"A": (x.astype(np.int16) + 128).astype(np.uint8)})[0]
        wrong += int(np.count_nonzero(got != x.astype(np.int64) @ (w.astype(np.int64) - 128).T))
    check = check_integer_gemm(FULL_LEVELS)
    assert check.kernel == "MatMulIntegerToFloat"
    assert check.wrong == wrong and check.exact == (wrong == 0)


def test_engines_written_before_are_checked_on_their_own_operator():
    old = check_integer_gemm(FULL_LEVELS, "MatMulInteger")
    assert old.kernel == "MatMulInteger" and old.total == check_integer_gemm(FULL_LEVELS).total
    with pytest.raises(ValueError, match="unknown integer GEMM operator"):
        check_integer_gemm(63, "Gemm")


def test_the_check_says_what_it_ran():
    check = check_integer_gemm(63)
    assert check.levels == 63 and check.total == sum(n * m for n, _, m in SHAPES)
    assert check.exact == (check.wrong == 0) and check.onnxruntime and check.cpu
    assert check_integer_gemm(63) is check  # once per process and range
    with pytest.raises(ValueError):
        check_integer_gemm(128)


def test_this_cpu_prefills_on_the_integer_graph_or_says_why_not(quantized):
    """Whichever CPU runs this: an exact kernel -> the prefill graph is loaded; an inexact one ->
    it is not, and every answer carries the reason."""
    from vinci_edge.runtime.pipeline import Pipeline

    pipe = Pipeline.from_engine(quantized("int8-compute"))
    dec = pipe.decoder
    exact = check_integer_gemm(63).exact  # the fixture engine is at --int8-range reduced
    assert (dec.prefill_session is not None) == exact
    assert (dec.prefill_note is None) == exact


def test_an_inexact_kernel_keeps_every_append_on_the_decode_graph(quantized, stage_inputs, monkeypatch):
    """The routing, given a failed check (the check itself runs the real kernel above): no prefill
    session, the decode graph takes the whole prompt, and the answer says why."""
    from vinci_edge.generation import GenerationConfig
    from vinci_edge.runtime import decoder as decoder_module
    from vinci_edge.runtime.pipeline import Pipeline

    failed = GemmCheck("MatMulIntegerToFloat", 63, False, 7, 1000, (96, 256, 100), "a CPU", "1.0")
    monkeypatch.setattr(decoder_module, "check_integer_gemm", lambda levels, kernel: failed)
    pipe = Pipeline.from_engine(quantized("int8-compute"))
    dec = pipe.decoder
    assert dec.prefill_session is None and dec.prefill_note == failed.note()
    assert "7 of 1000 results wrong" in dec.prefill_note and "decode graph" in dec.prefill_note
    calls = {"decode": 0}
    run = dec.session.run_with_iobinding

    def counted(io, *a, **k):
        calls["decode"] += 1
        return run(io, *a, **k)

    dec.session.run_with_iobinding = counted
    dec.reset()
    logits = dec.append(stage_inputs["decoder"]["embeds"])
    assert calls["decode"] == 1 and np.isfinite(logits).all()
    answer = pipe.ask("Hello?", GenerationConfig(max_new_tokens=2))
    assert failed.note() in answer.warnings and answer.extra["prefill_graph"] is False


def test_a_check_that_cannot_run_keeps_the_prefill_on_the_decode_graph(quantized, monkeypatch):
    """An ONNX Runtime without the operator: the engine still answers, on its decode graph."""
    from vinci_edge.runtime import decoder as decoder_module
    from vinci_edge.runtime.pipeline import Pipeline

    def missing(levels, kernel):
        raise RuntimeError("NOT_IMPLEMENTED : Could not find an implementation\nmore")

    monkeypatch.setattr(decoder_module, "check_integer_gemm", missing)
    dec = Pipeline.from_engine(quantized("int8-compute")).decoder
    assert dec.prefill_session is None
    assert dec.prefill_note.startswith("the integer GEMM check (MatMulIntegerToFloat) could not run")
    assert "RuntimeError: NOT_IMPLEMENTED" in dec.prefill_note and "more" not in dec.prefill_note
