"""The integer GEMM check (runtime/integer_gemm.py) and what the runtime does with its verdict.

int8-compute's prefill graph is exact integer arithmetic around MatMulInteger; whether ONNX
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


def _onnx_matmul_integer(a: np.ndarray) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    n, k = a.shape
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B", "azp"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("B", TensorProto.INT8, [k, None])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, None])],
        [numpy_helper.from_array(a, "A"), numpy_helper.from_array(np.array(128, np.uint8), "azp")],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8
    ).SerializeToString()


def test_the_check_graph_is_valid_onnx_and_its_count_is_recounted_through_the_onnx_package():
    import onnxruntime as ort

    onnx = pytest.importorskip("onnx")
    a = np.random.default_rng(3).integers(1, 256, SHAPES[0][:2], dtype=np.uint8)
    onnx.checker.check_model(onnx.load_from_string(integer_gemm._graph(a)))
    # the same draws as the check, run through a graph the onnx package builds, counted here
    rng = np.random.default_rng(0)
    wrong = 0
    for n, k, m in SHAPES:
        a = rng.integers(1, 256, (n, k), dtype=np.uint8)
        b = rng.integers(-FULL_LEVELS, FULL_LEVELS + 1, (k, m), dtype=np.int8)
        got = ort.InferenceSession(_onnx_matmul_integer(a), providers=["CPUExecutionProvider"]).run(
            None, {"B": b}
        )[0]
        wrong += int(np.count_nonzero(got != (a.astype(np.int64) - 128) @ b.astype(np.int64)))
    check = check_integer_gemm(FULL_LEVELS)
    assert check.wrong == wrong and check.exact == (wrong == 0)


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

    failed = GemmCheck(63, False, 7, 1000, (96, 256, 100), "a CPU", "1.0")
    monkeypatch.setattr(decoder_module, "check_integer_gemm", lambda levels: failed)
    pipe = Pipeline.from_engine(quantized("int8-compute"))
    dec = pipe.decoder
    assert dec.prefill_session is None and dec.prefill_note == failed.note()
    assert "7 of 1000 int32 results wrong" in dec.prefill_note and "decode graph" in dec.prefill_note
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
