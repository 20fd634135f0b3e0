"""ONNX Runtime's CUDA provider with I/O binding on a real GPU: the tiny graph, the tiny engine's media
stages against the CPU, a device array bound without a copy, a whole answer against the CPU one.
Without onnxruntime-gpu or a GPU every test is SKIPPED with the reason."""

from __future__ import annotations

import numpy as np
import pytest
from backend_helpers import CudaArray, agreement, require

from vinci_edge import stages as st
from vinci_edge.doctor import checks
from vinci_edge.generation import GenerationConfig
from vinci_edge.runtime.engine import Engine
from vinci_edge.runtime.stages import EngineStages

pytestmark = pytest.mark.gpu
TOL = {"rtol": 1e-3, "atol": 1e-3}


@pytest.fixture(scope="module")
def machine():
    return require("ort-cuda")


def _stages(tiny_engine):
    from vinci_edge.runtime.ort_cuda import OrtCudaStages

    engine = Engine.load(tiny_engine)
    return OrtCudaStages(engine, engine.embed_table()), EngineStages(engine, engine.embed_table())


def test_the_tiny_graph_on_device_buffers(machine):
    check = checks.ort_cuda(machine, 1e-4)
    assert check.status == checks.OK, check.detail


def test_media_stages_match_the_cpu_and_take_device_arrays(machine, tiny_engine):
    gpu, cpu = _stages(tiny_engine)
    assert gpu[st.VISION].provider == "CUDAExecutionProvider"
    x = np.random.default_rng(0).standard_normal((3, 3, 56, 56)).astype(np.float32)
    want = cpu[st.VISION].run({"pixel_values": x}, ["tokens"])["tokens"]
    np.testing.assert_allclose(gpu[st.VISION].run({"pixel_values": x}, ["tokens"])["tokens"], want, **TOL)
    got = gpu[st.VISION].run({"pixel_values": CudaArray(x)}, ["tokens"])["tokens"]
    np.testing.assert_allclose(got, want, **TOL)


def test_an_answer_matches_the_cpu_one(machine, tiny_engine, clip):
    from vinci_edge.runtime.pipeline import Pipeline

    gen = GenerationConfig(max_new_tokens=8)
    cpu = Pipeline.from_engine(tiny_engine).ask("What happens?", gen, video=clip)
    gpu = Pipeline.from_engine(tiny_engine, backend="ort-cuda").ask("What happens?", gen, video=clip)
    assert agreement(gpu.token_ids, cpu.token_ids) >= 0.75
    assert set(gpu.extra["providers"].values()) == {"CUDAExecutionProvider"}
