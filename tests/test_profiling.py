"""`vinci-edge profile`: the numbers it computes, the files it writes, the runtime hooks it uses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from vinci_edge import metrics as m
from vinci_edge.cli import run
from vinci_edge.generation import GenerationConfig
from vinci_edge.manifest import DecoderSpec
from vinci_edge.profiling import aggregate, bandwidth, memory, nvtx
from vinci_edge.profiling.onnx_weights import read_graph_weights
from vinci_edge.profiling.outputs import FILES
from vinci_edge.profiling.schema import PROFILE_SCHEMA, validate
from vinci_edge.profiling.stats import median_per_index, percentile, summarize
from vinci_edge.runtime.pipeline import Pipeline

RUNS, WARMUP, NEW_TOKENS = 2, 1, 6


def _profile_cli(engine: Path, clip: Path, out: Path, *extra: str) -> int:
    return run(
        ["profile", "--engine", str(engine), "--video", str(clip), "--runs", str(RUNS), "--warmup",
         str(WARMUP), "--max-new-tokens", str(NEW_TOKENS), "--threads", "1", "--out", str(out), *extra]
    )  # fmt: skip


@pytest.fixture(scope="module")
def profiled(tiny_engine, clip, tmp_path_factory) -> Path:
    """One real `vinci-edge profile` run (its engine in a child process, as by default)."""
    out = tmp_path_factory.mktemp("profile")
    assert _profile_cli(tiny_engine, clip, out) == 0
    return out


@pytest.fixture(scope="module")
def profile_json(profiled) -> dict:
    return json.loads((profiled / "profile.json").read_text())


# ---- pure numbers -----------------------------------------------------------------------------------
def test_percentiles_on_known_data():
    xs = list(range(1, 11))
    assert percentile(xs, 50) == 5.5
    assert percentile(xs, 90) == pytest.approx(9.1)
    assert percentile(xs, 99) == pytest.approx(9.91)
    assert percentile([7.0], 99) == 7.0
    assert percentile([3, 1, 2], 0) == 1 and percentile([3, 1, 2], 100) == 3
    rng = np.random.default_rng(0)
    data = list(rng.exponential(size=37))
    for q in (50, 90, 99):
        assert percentile(data, q) == pytest.approx(np.percentile(data, q))
    s = summarize([2.0, 4.0])
    assert s == {"n": 2, "mean": 3.0, "min": 2.0, "max": 4.0, "p50": 3.0, "p90": 3.8, "p99": 3.98}
    assert summarize([]) == {"n": 0}
    assert median_per_index([[1, 10, 5], [3, 20], [2, 30]]) == [2, 20, 5]
    with pytest.raises(ValueError):
        percentile([], 50)


def test_bound_on_known_numbers():
    spec = DecoderSpec(
        num_layers=30,
        num_heads=9,
        kv_heads=3,
        head_dim=64,
        hidden_size=576,
        vocab_size=49152,
        max_context=2048,
        dtype="float32",
    )
    per_position = bandwidth.kv_bytes_per_position(spec)
    assert per_position == 2 * 30 * 3 * 64 * 4 == 46080
    # 9 decode steps after a 100-position prompt attend over 101 ... 109 positions: 105 on average.
    assert bandwidth.mean_decode_context(100, 9) == 105
    b = bandwidth.decode_bound(
        bandwidth=32e9, weight_bytes=500_000_000, kv_position_bytes=per_position, context=105,
        measured_tokens_per_second=20.0,
    )  # fmt: skip
    per_token = 500_000_000 + 46080 * 105
    assert b["bytes_per_token"] == per_token
    assert b["bound_tokens_per_second"] == pytest.approx(32e9 / per_token)
    assert b["percent_of_bound"] == pytest.approx(100 * 20.0 / (32e9 / per_token))
    assert bandwidth.decode_bound(1e9, 1000, 0, 0, None)["percent_of_bound"] is None


def test_decoder_weight_bytes_are_the_matmul_initializers(tiny_engine):
    """The torch- and onnx-free protobuf reader against the onnx package itself."""
    import onnx
    from onnx import helper

    path = tiny_engine / "decoder.onnx"
    model = onnx.load(str(path), load_external_data=False)
    sizes = {
        t.name: int(np.prod(t.dims)) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        for t in model.graph.initializer
    }
    matmul = {i for n in model.graph.node if n.op_type == "MatMul" for i in n.input if i in sizes}
    weights = read_graph_weights(path)
    assert {n: i.nbytes for n, i in weights.initializers.items()} == sizes
    assert weights.matmul_weight_names() == matmul
    assert weights.bytes_read_per_call() == sum(sizes[n] for n in matmul)
    assert any("lm_head" in n for n in matmul)  # the output head is read every token too


def test_bandwidth_measurement_reports_a_plausible_rate():
    bw = bandwidth.measure_read_bandwidth(megabytes=64, repeats=1)
    assert 1e8 < bw["bytes_per_second"] < 1e13 and bw["threads"] >= 1


def test_the_profiler_is_torch_free():
    """It runs with the runtime, which installs neither torch nor onnx."""
    code = (
        "import sys, vinci_edge.profiling.cli, vinci_edge.profiling.profiler, vinci_edge.profiling.isolate, "
        "vinci_edge.profiling.outputs, vinci_edge.runtime.pipeline; "
        "print(sorted(m for m in ('torch', 'onnx', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- runtime hooks --------------------------------------------------------------------------------
def test_pipeline_times_session_creation_apart_and_uses_its_metrics_factory(tiny_engine, clip):
    pipe = Pipeline.from_engine(tiny_engine, threads=1)
    made = []

    def factory() -> m.Metrics:
        made.append(m.Metrics())
        return made[-1]

    pipe.metrics_factory = factory
    pipe.warmup()
    loads = pipe.load_metrics.records
    assert [r.name for r in loads] == [m.LOAD] * len(pipe.engine.stages)
    assert {r.attrs["stage"] for r in loads} == set(pipe.engine.stages)
    answer = pipe.ask("What happens?", GenerationConfig(max_new_tokens=3, ignore_eos=True), video=clip)
    assert made == [answer.metrics]
    assert m.LOAD not in {r.name for r in answer.metrics.records}  # load never counts in a request


def test_nvtx_is_a_no_op_on_the_cpu(monkeypatch):
    assert nvtx.nvtx_ranges(on_gpu=False) is nvtx.NO_RANGES
    assert nvtx.metrics_factory(nvtx.NO_RANGES) is m.Metrics
    # On a GPU without any NVTX binding the ranges fall back to the no-op too.
    for maker in ("_nvtx_package", "_cuda_python", "_libnvtoolsext"):
        monkeypatch.setattr(nvtx, maker, lambda: (_ for _ in ()).throw(ImportError("absent")))
    assert nvtx.nvtx_ranges(on_gpu=True) is nvtx.NO_RANGES


def test_nvtx_metrics_wrap_every_stage_in_a_range():
    calls = []
    ranges = nvtx.Ranges("fake", lambda name: calls.append(("push", name)), lambda: calls.append(("pop",)))
    met = nvtx.metrics_factory(ranges)()
    with met.stage(m.PREFILL, positions=3):
        pass
    with pytest.raises(RuntimeError), met.stage(m.DECODE):
        raise RuntimeError("a failing stage still pops its range")
    assert calls == [("push", "prefill"), ("pop",), ("push", "decode"), ("pop",)]
    assert [r.name for r in met.records] == [m.PREFILL, m.DECODE]


def test_gpu_memory_is_reported_as_not_available_on_the_cpu():
    with memory.GpuMemorySampler(on_gpu=False) as gpu:
        pass
    assert gpu.result() == {"available": False, "reason": "the stages run on the CPU"}
    assert memory.peak_rss() >= (memory.current_rss() or 0) > 0


# ---- the profile files ------------------------------------------------------------------------------
def test_cli_writes_all_four_files(profiled):
    for name in FILES:
        assert (profiled / name).stat().st_size > 0
    html = (profiled / "profile.html").read_text()
    assert html.count("<svg") == 3 and "<polyline" in html
    assert "<script" not in html and "src=" not in html  # self-contained
    md = (profiled / "profile.md").read_text()
    assert "| time to first token (ms) |" in md and "TEG + CRTE (stitch)" in md and "% of bound" in md


def test_profile_json_matches_its_schema(profile_json):
    assert validate(profile_json) == []
    broken = json.loads(json.dumps(profile_json))
    del broken["engines"][0]["requests"]["end_to_end_s"]
    broken["engines"][0]["threads"] = "one"
    problems = validate(broken, PROFILE_SCHEMA)
    assert "$.engines[0].requests: missing 'end_to_end_s'" in problems
    assert "$.engines[0].threads: expected integer, got str" in problems


def test_profile_measures_the_pipeline_records(profile_json):
    e = profile_json["engines"][0]
    runs = e["runs"]
    assert [r["warmup"] for r in runs] == [True] * WARMUP + [False] * RUNS
    assert e["requests"]["runs"] == RUNS
    for r in runs:
        names = [x["name"] for x in r["records"]]
        assert names.count(m.DECODE) == NEW_TOKENS - 1  # the first token comes from the prefill
        assert {m.MEDIA_DECODE, m.LOG_MEL, m.VISION, m.AUDIO, m.STITCH, m.PREFILL} <= set(names)
        prefill = next(x for x in r["records"] if x["name"] == m.PREFILL)
        assert prefill["attrs"] == {"positions": r["prompt_positions"], "provider": "CPUExecutionProvider"}
        assert r["new_tokens"] == NEW_TOKENS and r["stop_reason"] == "max_new_tokens"
    assert set(e["load"]["sessions_s"]) == {"vision", "image_projector", "audio", "decoder"}
    assert e["load"]["total_s"] >= sum(e["load"]["sessions_s"].values())
    assert e["memory"]["peak_rss_bytes"] >= e["memory"]["peak_rss_load_bytes"] > 0
    assert e["memory"]["gpu"]["available"] is False
    assert e["sizes"]["stages"]["decoder"]["bytes"] > 0 and e["sizes"]["total_bytes"] > 0


def test_stage_times_add_up_to_end_to_end(profile_json):
    """Stages never overlap, and what they leave out stays under the stated budget
    (aggregate.OVERHEAD_FRACTION of end to end + OVERHEAD_SECONDS)."""
    e = profile_json["engines"][0]
    for r in e["runs"]:
        recs = sorted(r["records"], key=lambda x: x["start_ns"])
        for a, b in zip(recs, recs[1:]):
            assert a["end_ns"] <= b["start_ns"]
        assert r["start_ns"] <= recs[0]["start_ns"] and recs[-1]["end_ns"] <= r["end_ns"]
        e2e = (r["end_ns"] - r["start_ns"]) / 1e9
        staged = sum(x["end_ns"] - x["start_ns"] for x in recs) / 1e9
        assert 0 <= e2e - staged <= aggregate.OVERHEAD_FRACTION * e2e + aggregate.OVERHEAD_SECONDS
    assert e["requests"]["overhead_budget"]["all_runs_within"] is True


def test_the_bound_uses_the_measured_bandwidth_and_decode_rate(profile_json):
    e = profile_json["engines"][0]
    b = e["bound"]
    bw = profile_json["machine"]["memory_bandwidth"]["bytes_per_second"]
    assert b["bandwidth_bytes_per_second"] == bw
    assert b["weight_bytes_per_token"] == e["decoder"]["weight_bytes_per_token"] > 0
    assert b["context_positions"] == e["requests"]["prompt_positions"] + NEW_TOKENS / 2
    assert b["measured_tokens_per_second"] == e["requests"]["decode_tokens_per_second"]["p50"]
    assert b["percent_of_bound"] == pytest.approx(
        100 * b["measured_tokens_per_second"] * b["bytes_per_token"] / bw
    )


def _check_nesting(spans: list[dict]) -> None:
    """On each (pid, tid) track, every span lies within the innermost span open when it starts."""
    tracks = defaultdict(list)
    for s in spans:
        tracks[s["pid"], s["tid"]].append(s)
    for track in tracks.values():
        stack: list[dict] = []
        for s in sorted(track, key=lambda s: (s["ts"], -s["dur"])):
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= s["ts"] and stack[-1]["dur"] > 0:
                stack.pop()
            if stack:
                parent = stack[-1]
                assert parent["ts"] <= s["ts"] and s["ts"] + s["dur"] <= parent["ts"] + parent["dur"], (
                    f"{s['name']} overlaps {parent['name']}"
                )
            stack.append(s)


def test_trace_loads_and_its_events_nest(profiled):
    trace = json.loads((profiled / "trace.json").read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    for s in spans:
        assert isinstance(s["ts"], int) and isinstance(s["dur"], int) and s["dur"] >= 0
        assert {"name", "pid", "tid", "args"} <= set(s)
    _check_nesting(spans)
    requests = [s for s in spans if s["cat"] == "request"]
    assert len(requests) == RUNS + WARMUP
    for s in spans:
        if s["cat"] in ("stage", "decode"):
            assert any(
                r["pid"] == s["pid"] and r["tid"] == s["tid"] and r["ts"] <= s["ts"]
                and s["ts"] + s["dur"] <= r["ts"] + r["dur"]
                for r in requests
            )  # fmt: skip
    steps = [s for s in spans if s["cat"] == "decode"]
    assert len(steps) == (RUNS + WARMUP) * (NEW_TOKENS - 1)
    stitch = next(s for s in spans if s["name"] == m.STITCH)
    assert "implementation" in stitch["args"]  # the record's attrs travel as args


def test_compare_profiles_each_engine_in_its_own_process(tiny_engine, clip, tmp_path):
    copy = tmp_path / "tiny-copy"
    shutil.copytree(tiny_engine, copy)
    out = tmp_path / "out"
    assert _profile_cli(tiny_engine, clip, out, "--compare", str(copy)) == 0
    profile = json.loads((out / "profile.json").read_text())
    assert validate(profile) == []
    assert profile["isolated"] is True
    comp = profile["comparison"]
    assert comp["labels"] == [tiny_engine.name, "tiny-copy"] and comp["baseline"] == tiny_engine.name
    rows = {r["metric"]: r for r in comp["rows"]}
    assert rows["disk_bytes"]["ratios"] == [1.0, 1.0]
    ttft = rows["time_to_first_token_s"]
    assert ttft["ratios"][1] == pytest.approx(ttft["values"][1] / ttft["values"][0])
    assert "Comparison against" in (out / "profile.md").read_text()
    assert "Comparison against" in (out / "profile.html").read_text()
    # Two processes: two RSS peaks measured independently, same engine so about the same size.
    peaks = [e["memory"]["peak_rss_bytes"] for e in profile["engines"]]
    assert 0.5 < peaks[1] / peaks[0] < 2.0
    trace = json.loads((out / "trace.json").read_text())
    assert {e["pid"] for e in trace["traceEvents"]} == {1, 2}


# ---- bad input --------------------------------------------------------------------------------------
def test_missing_engine_exits_2_with_a_message(clip, tmp_path, capsys):
    assert _profile_cli(tmp_path / "nope", clip, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "vinci-edge: error: engine folder" in err and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_video_exits_2_with_a_message(tiny_engine, tmp_path, capsys):
    assert _profile_cli(tiny_engine, tmp_path / "nope.mp4", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "vinci-edge: error: --video" in err and "file not found" in err


def test_no_media_exits_2(tiny_engine, tmp_path, capsys):
    assert run(["profile", "--engine", str(tiny_engine), "--out", str(tmp_path)]) == 2
    assert "needs a request with media" in capsys.readouterr().err


def test_an_error_in_the_engine_process_comes_back_as_exit_2(tiny_engine, clip, tmp_path, capsys):
    """An engine that loads but lacks a stage the request needs fails inside the child process;
    the message comes back as the same error, not as a crash."""
    broken = tmp_path / "no-audio"
    shutil.copytree(tiny_engine, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    del manifest["stages"]["audio"]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert _profile_cli(broken, clip, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "vinci-edge: error:" in err and "'audio'" in err
