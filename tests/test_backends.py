"""The GPU backends' CPU-side parts: which backend runs where and the refusals, the ping-pong KV
binding (run against a numpy stand-in for the graph), the CUDA-graph cache, DLPack views."""

from __future__ import annotations

import numpy as np
import pytest

from vinci_edge.cli import build_parser, run
from vinci_edge.runtime import backends as b
from vinci_edge.runtime.dlpack import DeviceArrayError, device_view
from vinci_edge.runtime.kv_cache import GraphCache, PingPongKV

ORIN = b.Gpu("Orin", (8, 7))
ORT_GPU = ["CUDAExecutionProvider", "CPUExecutionProvider"]
NO_TRT = {"tensorrt": "No module named 'tensorrt'"}


# ---- which backend runs where ---------------------------------------------------------------------
def test_precisions_by_compute_capability():
    assert b.precisions((8, 7)) == {"fp32": True, "fp16": True, "int8": True, "int4-awq": True, "fp8": False}
    assert b.precisions((8, 9))["fp8"] and b.precisions((11, 0))["fp8"] and b.precisions((9, 0))["fp8"]
    assert not any(b.precisions(None).values())


@pytest.mark.parametrize(
    ("backend", "probe", "why"),
    [
        ("ort-cpu", b.Probe(onnxruntime="1.24"), None),
        ("ort-cpu", b.Probe(), "ONNX Runtime is not installed"),
        ("ort-cuda", b.Probe(onnxruntime="1.24", ort_providers=["CPUExecutionProvider"]),
         "this ONNX Runtime (1.24) has no CUDA provider"),
        ("ort-cuda", b.Probe(onnxruntime="1.24", ort_providers=ORT_GPU, reasons={"gpu": "no driver"}),
         "no CUDA GPU is visible (no driver)"),
        ("ort-cuda", b.Probe(onnxruntime="1.24", ort_providers=ORT_GPU, gpus=[ORIN]), None),
        ("tensorrt", b.Probe(gpus=[ORIN], cuda_python="13.0", reasons=NO_TRT),
         "TensorRT is not installed (No module named 'tensorrt')"),
        ("tensorrt", b.Probe(gpus=[ORIN], tensorrt="10.3.0"), "cuda-python is not installed"),
        ("tensorrt", b.Probe(tensorrt="10.3.0", cuda_python="12.6"), "no CUDA GPU is visible"),
        ("tensorrt", b.Probe(gpus=[ORIN], tensorrt="10.3.0", cuda_python="12.6"), None),
    ],
)  # fmt: skip
def test_what_each_backend_needs(backend, probe, why):
    found = b.unavailable(backend, probe)
    assert found is None if why is None else found.startswith(why), found


def test_the_device_key_comes_from_gpu_0_and_tensorrt():
    p = b.Probe(gpus=[ORIN, b.Gpu("Other", (9, 0))], tensorrt="10.3.0")
    assert p.device_info().slug == "orin-sm_87-trt10.3.0"
    assert b.Probe(gpus=[ORIN]).device_info() is None


def test_the_cli_offers_the_runtime_s_backends():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    backend = next(a for a in sub.choices["run"]._actions if a.dest == "backend")
    assert tuple(backend.choices) == b.BACKENDS and backend.default == b.ORT_CPU


def test_a_backend_this_machine_lacks_is_one_message_and_exit_2(tiny_engine, capsys):
    machine = b.probe()
    for backend in ("tensorrt", "ort-cuda"):
        why = b.unavailable(backend, machine)
        if why is None:
            pytest.skip(f"this machine can run {backend}")
        argv = ["run", "--engine", str(tiny_engine), "--prompt", "Hi", "--backend", backend]
        assert run(argv) == 2
        out, err = capsys.readouterr()
        lines = [line for line in err.splitlines() if not line.startswith("[vinci-edge]")]
        assert lines == [
            f"vinci-edge: error: --backend {backend} cannot run here: {why}",
            "vinci-edge: hint: use --backend ort-cpu (the default), or run `vinci-edge doctor` to see what "
            "is missing",
        ]
        assert out == ""


def test_an_unknown_backend_is_refused_where_it_is_parsed(tmp_path, capsys):
    assert run(["run", "--engine", str(tmp_path / "e"), "--prompt", "x", "--backend", "trt"]) == 2
    assert "argument --backend: invalid choice: 'trt'" in capsys.readouterr().err


def test_providers_only_tune_the_ort_cpu_backend(tiny_engine, capsys):
    argv = [
        "run",
        "--engine",
        str(tiny_engine),
        "--prompt",
        "Hi",
        "--backend",
        "ort-cuda",
        "--provider",
        "cuda",
    ]
    assert run(argv) == 2
    assert "--provider / --stage-provider tune only the ort-cpu backend" in capsys.readouterr().err


# ---- the KV cache, bound ping-pong ----------------------------------------------------------------------
class NumpyGraph:
    """What the portable graph does to the cache: present = concat(past, new) along positions, every
    tensor dense. Buffers are flat arrays, as device memory is."""

    def __init__(self, kv: PingPongKV, same_buffer: bool = False) -> None:
        self.kv, self.same = kv, same_buffer
        self.buffers = [np.zeros(kv.elements, np.float32), np.zeros(kv.elements, np.float32)]

    def call(self, new: np.ndarray) -> None:  # new: (kv_heads, S, head_dim)
        (bind,) = [x for x in self.kv.plan(new.shape[1]) if (x.layer, x.kind) == (0, "key")]
        _, h, p, d = bind.past_shape
        s = new.shape[1]
        src = self.buffers[bind.past_side]
        dst = src if self.same else self.buffers[bind.present_side]
        for head in range(h):  # head by head, as kernels may: reads of later heads see earlier writes
            past = src[head * p * d : (head + 1) * p * d].reshape(p, d).copy()
            dst[head * (p + s) * d : (head + 1) * (p + s) * d] = np.concatenate([past, new[head]]).ravel()
        if self.same:
            self.kv.length += s  # one buffer: the side never changes
        else:
            self.kv.commit(s)

    def cache(self) -> np.ndarray:
        n, h, d = self.kv.length, self.kv.kv_heads, self.kv.head_dim
        return self.buffers[self.kv.side][: h * n * d].reshape(h, n, d)

    def rewind(self, length: int) -> None:
        for c in self.kv.rewind(length):
            self.buffers[c.dst_side][c.dst : c.dst + c.count] = self.buffers[c.src_side][
                c.src : c.src + c.count
            ]


def test_ping_pong_binding_keeps_the_cache_through_prefill_steps_and_rewind():
    rng = np.random.default_rng(0)
    kv = PingPongKV(num_layers=2, kv_heads=2, head_dim=4, max_context=32)
    graph, want = NumpyGraph(kv), np.zeros((2, 0, 4), np.float32)
    for s in (7, 1, 1, 1, 3):
        new = rng.standard_normal((2, s, 4)).astype(np.float32)
        graph.call(new)
        want = np.concatenate([want, new], axis=1)
        np.testing.assert_array_equal(graph.cache(), want)
    graph.rewind(8)
    np.testing.assert_array_equal(graph.cache(), want[:, :8])
    new = rng.standard_normal((2, 2, 4)).astype(np.float32)
    graph.call(new)
    np.testing.assert_array_equal(graph.cache(), np.concatenate([want[:, :8], new], axis=1))
    bindings = kv.plan(1)
    assert len(bindings) == 4 and {x.past_side for x in bindings} == {kv.side}
    assert bindings[0].past_shape == (1, 2, 10, 4) and bindings[0].present_shape == (1, 2, 11, 4)
    with pytest.raises(ValueError, match="do not fit"):
        kv.plan(kv.free + 1)


def test_binding_past_and_present_to_one_buffer_corrupts_a_multi_head_cache():
    """Why kv_cache.py binds two buffers: with one, the present's head stride (P + S) overruns the
    past's head 1 before it is read."""
    rng = np.random.default_rng(1)
    kv = PingPongKV(num_layers=1, kv_heads=2, head_dim=4, max_context=32)
    graph, want = NumpyGraph(kv, same_buffer=True), np.zeros((2, 0, 4), np.float32)
    for s in (5, 1):
        new = rng.standard_normal((2, s, 4)).astype(np.float32)
        graph.call(new)
        want = np.concatenate([want, new], axis=1)
    got = graph.buffers[0][: 2 * kv.length * 4].reshape(2, kv.length, 4)
    np.testing.assert_array_equal(got[0], want[0])  # head 0 survives
    assert not np.array_equal(got[1], want[1])  # head 1 read rows head 0 had already overwritten


# ---- CUDA graphs of decode steps -------------------------------------------------------------------
def test_a_step_is_run_eagerly_then_captured_then_replayed():
    made, released, ran, launched = [], [], [], []

    def capture():
        ran.append("capture")
        made.append(f"g{len(made)}")
        return made[-1]

    cache = GraphCache(2, capture, released.append)
    run_key = lambda k: cache.run(k, lambda: ran.append(k), launched.append)  # noqa: E731
    assert [run_key(k) for k in [(5, 0), (5, 0), (5, 0), (6, 1)]] == ["eager", "capture", "replay", "eager"]
    assert launched == ["g0"] and ran == [(5, 0), "capture", (6, 1)]
    run_key((6, 1))
    run_key((7, 0))
    run_key((7, 0))  # a third graph: the least recently used one goes
    assert released == ["g0"] and list(cache.graphs) == [(6, 1), (7, 0)]
    assert (cache.hits, cache.captures, cache.eager) == (1, 3, 3)
    cache.clear()
    assert released == ["g0", "g1", "g2"] and not cache.graphs


def test_no_capacity_means_always_eager():
    cache = GraphCache(0, lambda: pytest.fail("captured"), lambda g: None)
    assert [cache.run(1, lambda: None, lambda g: None) for _ in range(3)] == ["eager"] * 3


# ---- arrays already on a device --------------------------------------------------------------------
def test_dlpack_views_take_the_producer_s_memory_without_a_copy():
    a = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    v = device_view(a)
    assert (v.ptr, v.shape, v.dtype, v.on_gpu) == (a.ctypes.data, (2, 3, 4), np.float16, False)
    assert v.nbytes == a.nbytes
    v.release()
    row = device_view(a[1])
    assert row.ptr == a[1].ctypes.data and row.shape == (3, 4)
    with pytest.raises(DeviceArrayError, match="strided"):
        device_view(a[:, :, ::2])


def test_the_cuda_array_interface_is_read_and_strides_refused():
    class Fake:
        def __init__(self, strides):
            self.__cuda_array_interface__ = {
                "data": (0x7000, False), "shape": (2, 8), "typestr": "<f4", "strides": strides, "version": 3,
            }  # fmt: skip

    v = device_view(Fake(None))
    assert (v.ptr, v.shape, v.dtype, v.on_gpu) == (0x7000, (2, 8), np.float32, True)
    assert device_view(Fake((32, 4))).ptr == 0x7000
    with pytest.raises(DeviceArrayError, match="strided"):
        device_view(Fake((64, 4)))
