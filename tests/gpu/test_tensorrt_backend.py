"""The TensorRT backend on a real GPU: the tiny plan against numpy, build-engines on the tiny engine
and its media stages against ONNX Runtime on the CPU, device arrays bound without a copy, a plan of
another device refused, and - once the exporter writes the portable decoder graph - a whole answer
against the CPU one. Without TensorRT, cuda-python or a GPU every test is SKIPPED with the reason."""

from __future__ import annotations

import json

import numpy as np
import pytest
from backend_helpers import CudaArray, agreement, require

from vinci_edge import stages as st
from vinci_edge.cli import run
from vinci_edge.doctor import tiny_graph
from vinci_edge.doctor.checks import build_and_run_tiny_plan
from vinci_edge.errors import EngineError
from vinci_edge.generation import GenerationConfig
from vinci_edge.runtime import profiles
from vinci_edge.runtime.engine import Engine
from vinci_edge.runtime.stages import EngineStages

pytestmark = pytest.mark.gpu
TOL = {"rtol": 1e-2, "atol": 1e-2}  # fp32 with TF32 allowed


@pytest.fixture(scope="module")
def machine():
    return require("tensorrt")


@pytest.fixture(scope="module")
def plans(machine, tiny_engine, tmp_path_factory):
    out = tmp_path_factory.mktemp("plans")
    assert (
        run(["build-engines", "--engine", str(tiny_engine), "--out", str(out), "--stages", "vision,audio"])
        == 0
    )
    return out


def _stages(machine, tiny_engine, plans):
    from vinci_edge.runtime.tensorrt_backend import TrtStages

    engine = Engine.load(tiny_engine)
    return TrtStages(engine, engine.embed_table(), machine.device_info(), plans), EngineStages(
        engine, engine.embed_table()
    )


def test_the_tiny_plan_matches_numpy(machine):
    y, x = build_and_run_tiny_plan()
    np.testing.assert_allclose(y, tiny_graph.reference(x), **TOL)


def test_media_stages_match_onnx_runtime_on_the_cpu(machine, tiny_engine, plans):
    trt, cpu = _stages(machine, tiny_engine, plans)
    x = np.random.default_rng(0).standard_normal((10, 3, 56, 56)).astype(np.float32)  # > max 8: sliced
    assert trt[st.VISION].max_batch == 8
    got = trt[st.VISION].run({"pixel_values": x}, ["tokens"])["tokens"]
    np.testing.assert_allclose(got, cpu[st.VISION].run({"pixel_values": x}, ["tokens"])["tokens"], **TOL)
    mel = np.random.default_rng(1).standard_normal((2, 128, 3000)).astype(np.float32)
    got = trt[st.AUDIO].run({"mel": mel}, ["tokens"])["tokens"]
    np.testing.assert_allclose(got, cpu[st.AUDIO].run({"mel": mel}, ["tokens"])["tokens"], **TOL)


def test_a_device_array_is_bound_where_it_is(machine, tiny_engine, plans):
    trt, _ = _stages(machine, tiny_engine, plans)
    x = np.random.default_rng(2).standard_normal((3, 3, 56, 56)).astype(np.float32)
    on_host = trt[st.VISION].run({"pixel_values": x}, ["tokens"])["tokens"]
    on_device = trt[st.VISION].run({"pixel_values": CudaArray(x)}, ["tokens"])["tokens"]
    np.testing.assert_array_equal(on_device, on_host)


def test_a_plan_built_for_another_gpu_is_refused(machine, tiny_engine, plans):
    record = next(plans.glob("*/vision-*.json"))
    saved = record.read_text()
    data = json.loads(saved)
    data["key"]["gpu"] = "Some Other GPU"
    record.write_text(json.dumps(data))
    try:
        trt, _ = _stages(machine, tiny_engine, plans)
        with pytest.raises(EngineError, match="was built for Some Other GPU"):
            trt[st.VISION]
    finally:
        record.write_text(saved)


def test_an_answer_matches_the_cpu_one(machine, tiny_engine, clip):
    from vinci_edge.manifest import Manifest
    from vinci_edge.runtime.pipeline import Pipeline

    if profiles.portable_decoder(Manifest.read(tiny_engine)) is None:
        pytest.skip(profiles.NO_PORTABLE_DECODER)
    assert run(["build-engines", "--engine", str(tiny_engine)]) == 0
    gen = GenerationConfig(max_new_tokens=8)
    cpu = Pipeline.from_engine(tiny_engine).ask("What happens?", gen, video=clip)
    pipe = Pipeline.from_engine(tiny_engine, backend="tensorrt")
    first = pipe.ask("What happens?", gen, video=clip)
    again = pipe.ask("What happens?", gen, video=clip)  # the same positions: decode steps replay
    assert agreement(first.token_ids, cpu.token_ids) >= 0.75 and again.token_ids == first.token_ids
    assert pipe.stitch_name == "cuda-device" and pipe.decoder.graphs.captures > 0
