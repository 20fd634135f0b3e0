"""The profiler of one engine: runs the real runtime (Pipeline.ask) and collects its stage records.

    profile_engine(EngineTarget("engine/smol"), RequestSpec("What happens?", video="clip.mp4"))

Create the pipeline and every session (timed as "load"), answer the request `warmup` times (not
counted) and `runs` times, and keep each run's `Metrics` records - the same records that `--json`
prints - relative to the moment loading started. `collect.profile` runs it on every engine and adds
the machine's read bandwidth and each engine's decode bound.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vinci_edge import __version__
from vinci_edge import metrics as m
from vinci_edge import stages as st
from vinci_edge.generation import Answer, GenerationConfig
from vinci_edge.host import cpu_name
from vinci_edge.profiling import aggregate, bandwidth, disk, memory
from vinci_edge.profiling.nvtx import metrics_factory, nvtx_ranges, uses_gpu
from vinci_edge.progress import Progress, silent


@dataclass
class RequestSpec:
    """The request every run answers, and how many runs."""

    prompt: str
    video: str | None = None
    audio: str | None = None
    image: str | None = None
    num_frames: int | None = None
    max_new_tokens: int = 32
    runs: int = 5
    warmup: int = 1
    # Decode a fixed number of tokens by default: runs (and engines) that stop at different points
    # would not be comparable. --stop-at-eos answers as a user would see it.
    stop_at_eos: bool = False

    def media(self) -> dict[str, Any]:
        return {"video": self.video, "audio": self.audio, "image": self.image, "num_frames": self.num_frames}


@dataclass
class EngineTarget:
    """One engine folder and how to run it."""

    folder: str
    label: str = ""
    provider: str = "cpu"
    stage_providers: dict[str, str] = field(default_factory=dict)
    threads: int = 0

    def __post_init__(self) -> None:
        self.label = self.label or Path(self.folder).name


# ---- one engine, in this process --------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def _records(records: list[m.StageRecord], origin_ns: int) -> list[dict[str, Any]]:
    return [
        {
            "name": r.name,
            "start_ns": r.start_ns - origin_ns,
            "end_ns": r.end_ns - origin_ns,
            "attrs": _jsonable(r.attrs),
        }
        for r in records
    ]


def _run_record(answer: Answer, index: int, warmup: bool, origin_ns: int) -> dict[str, Any]:
    met = answer.metrics
    return {
        "index": index,
        "warmup": warmup,
        "start_ns": met.origin_ns - origin_ns,
        "end_ns": met.end_ns - origin_ns,
        "first_token_ns": None if met.first_token_ns is None else met.first_token_ns - origin_ns,
        "prompt_positions": answer.prompt_tokens,
        "new_tokens": len(answer.token_ids),
        "stop_reason": answer.stop_reason,
        "records": _records(met.records, origin_ns),
    }


def _progress_line(label: str, i: int, req: RequestSpec, run: dict[str, Any]) -> str:
    n = aggregate.run_numbers(run)
    kind = "warm-up" if run["warmup"] else f"run {i + 1 - req.warmup}/{req.runs}"
    tps = n["decode_tokens_per_second"]
    return (
        f"{label}: {kind}: first token {n['time_to_first_token_s']:.3f} s, {run['new_tokens']} tokens, "
        f"decode {tps:.1f} tok/s, end to end {n['end_to_end_s']:.3f} s"
        if tps
        else f"{label}: {kind}: end to end {n['end_to_end_s']:.3f} s, {run['new_tokens']} tokens"
    )


def profile_engine(target: EngineTarget, req: RequestSpec, say: Progress | None = None) -> dict[str, Any]:
    """Load one engine, answer `req` warmup + runs times, return its entry of profile.json
    (everything but the bound, which needs the machine's bandwidth)."""
    from vinci_edge.runtime.backend import resolve_provider
    from vinci_edge.runtime.pipeline import Pipeline

    say = say or silent
    on_gpu = uses_gpu(resolve_provider(p) for p in (target.provider, *target.stage_providers.values()))
    # Peaks from here on are this engine's (an earlier engine or the bandwidth array in this process
    # would otherwise show in them, with --in-process).
    memory.reset_peak_rss()
    rss_before = memory.current_rss()
    gen = GenerationConfig(max_new_tokens=req.max_new_tokens, ignore_eos=not req.stop_at_eos)

    with memory.GpuMemorySampler(on_gpu) as gpu:
        say(f"{target.label}: loading {target.folder}")
        origin = time.perf_counter_ns()
        pipe = Pipeline.from_engine(
            target.folder,
            provider=target.provider,
            stage_providers=target.stage_providers,
            threads=target.threads,
            cache_chunks=0,  # every run encodes its media: that is what is measured
        )
        engine_loaded = time.perf_counter_ns()
        ranges = nvtx_ranges(on_gpu)
        pipe.metrics_factory = metrics_factory(ranges)
        pipe.load_metrics = pipe.metrics_factory()  # nothing recorded yet: sessions are created lazily
        pipe.warmup()
        loaded = time.perf_counter_ns()
        peak_load = memory.peak_rss()
        say(f"{target.label}: loaded in {(loaded - origin) / 1e9:.2f} s")

        peak_reset = memory.reset_peak_rss()
        runs, answer = [], None
        for i in range(req.warmup + req.runs):
            answer = pipe.ask(req.prompt, gen, **req.media())
            runs.append(_run_record(answer, i, i < req.warmup, origin))
            say(_progress_line(target.label, i, req, runs[-1]))
        peak_requests = memory.peak_rss()

    decoder_spec = pipe.engine.manifest.decoder
    manifest = pipe.engine.manifest
    return {
        "label": target.label,
        "engine": str(Path(target.folder).resolve()),
        "model_id": manifest.model_id,
        "precision": manifest.precision,
        "providers": answer.extra["providers"],
        "threads": target.threads,
        "stitch": pipe.stitch_name,
        "nvtx": ranges.source,
        "sizes": disk.engine_sizes(target.folder, manifest),
        "load": {
            "engine_s": (engine_loaded - origin) / 1e9,
            "engine_end_ns": engine_loaded - origin,
            "sessions_s": {r.attrs["stage"]: r.seconds for r in pipe.load_metrics.records},
            "total_s": (loaded - origin) / 1e9,
            "start_ns": 0,
            "end_ns": loaded - origin,
            "records": _records(pipe.load_metrics.records, origin),
        },
        "requests": aggregate.summarize_runs(runs),
        "runs": runs,
        "answer": {"text": answer.text, "token_ids": answer.token_ids, "stop_reason": answer.stop_reason},
        "memory": {
            "rss_before_load_bytes": rss_before,
            "peak_rss_load_bytes": peak_load,
            "peak_rss_requests_bytes": peak_requests if peak_reset else None,
            "peak_rss_bytes": max(peak_load, peak_requests),
            "gpu": gpu.result(),
        },
        "decoder": {
            **bandwidth.decoder_bytes_per_token(pipe.engine.stage_path(st.DECODER)),
            "kv_bytes_per_position": bandwidth.kv_bytes_per_position(decoder_spec),
            "dtype": decoder_spec.dtype,
        },
    }


# ---- several engines, the bound, the whole profile ----------------------------------------------------
def add_bound(engine: dict[str, Any], bandwidth_bytes_per_second: float) -> None:
    req = engine["requests"]
    steps = req["decode_step_s"].get("n", 0) // max(req["runs"], 1)
    engine["bound"] = bandwidth.decode_bound(
        bandwidth_bytes_per_second,
        engine["decoder"]["weight_bytes_per_token"],
        engine["decoder"]["kv_bytes_per_position"],
        bandwidth.mean_decode_context(req["prompt_positions"] or 0, steps),
        req["decode_tokens_per_second"].get("p50"),
    )


def machine_info() -> dict[str, Any]:
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    return {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": ort,
        "vinci_edge": __version__,
    }
