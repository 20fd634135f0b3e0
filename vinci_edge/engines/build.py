"""The TensorRT calls of `build-engines`: parse, configure, build, write. Thin on purpose: what to build
and how is decided in plan.py; this turns one `StagePlan` into a plan file and its record.

Per stage: `trt.Builder`, a network (strongly typed when the plan says so:
`1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)`), `trt.OnnxParser.parse_from_file` (which
reads external weights beside the graph), a builder config (the FP16 flag for weakly typed fp16
builds, TF32 off for strict fp32, workspace limit, optimization level), one optimization profile per
`Profile`, the device's timing cache (loaded before, saved after every stage, so later builds and
other engine folders reuse the measured tactics), a progress monitor that says what the builder is
doing at most every few seconds, then `build_serialized_network`. The plan is written atomically
with its record (`<stage>-<digest>.json`: the key, the profiles, the typing, the build time).
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from vinci_edge.engines.plan import StagePlan
from vinci_edge.errors import EngineError
from vinci_edge.progress import Progress
from vinci_edge.runtime.engine_key import DeviceInfo
from vinci_edge.runtime.tensorrt_backend import TrtLogger, import_tensorrt

TIMING_CACHE = "timing.cache"
SAY_EVERY_S = 10.0


def build_stage(plan: StagePlan, device: DeviceInfo, out: Path, options, progress: Progress) -> Path:
    """Build one stage's plan file (see the module docstring); returns its path."""
    trt = import_tensorrt()
    logger = TrtLogger.get(trt)
    folder = out / device.slug
    folder.mkdir(parents=True, exist_ok=True)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.typing.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    progress(f"{plan.stage}: parsing {plan.graph[0].name}")
    if not parser.parse_from_file(str(plan.graph[0])):
        errors = [str(parser.get_error(i)) for i in range(min(parser.num_errors, 3))]
        raise EngineError(
            f"TensorRT cannot parse {plan.graph[0].name}: {'; '.join(errors) or 'no error given'}",
            hint="the graph has an op this TensorRT lacks: re-export with this vinci-edge, or update it",
        )
    config = builder.create_builder_config()
    if not plan.typing.strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    if not plan.typing.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    if options.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    config.builder_optimization_level = options.opt_level
    cache_file = folder / TIMING_CACHE
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        progress(
            f"{plan.stage}: {cache_file.name} was made on another device or TensorRT; starting a new one"
        )
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    for prof in plan.profiles:
        p = builder.create_optimization_profile()
        for t in prof.inputs:
            p.set_shape(t.name, t.min, t.opt, t.max)
        config.add_optimization_profile(p)
    monitor = _monitor(trt, plan.stage, progress)
    config.progress_monitor = monitor
    progress(f"{plan.stage}: building ({plan.typing.describe()}); a large stage takes minutes")
    start = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.monotonic() - start
    if serialized is None:
        raise EngineError(
            f"TensorRT failed to build stage '{plan.stage}' (its log above says why)",
            hint="try a larger --workspace, or --precision fp32 for a stage that fails in fp16",
        )
    _write_atomic(plan.plan_path, bytes(serialized))
    record = {
        "key": plan.key.to_dict(),
        "profiles": [p.to_dict() for p in plan.profiles],
        "typing": plan.typing.describe(),
        "graph": [p.name for p in plan.graph],
        "graph_precision": plan.graph_precision,
        "built": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 1),
    }
    _write_atomic(plan.plan_path.with_suffix(".json"), (json.dumps(record, indent=2) + "\n").encode())
    _write_atomic(cache_file, bytes(config.get_timing_cache().serialize()))
    size = plan.plan_path.stat().st_size / 2**20
    progress(f"{plan.stage}: built in {seconds:.0f} s -> {plan.plan_path} ({size:.1f} MiB)")
    return plan.plan_path


def _monitor(trt, stage: str, progress: Progress):
    """A `trt.IProgressMonitor` that says the current top-level phase and step at most every
    SAY_EVERY_S seconds (TensorRT calls it from several threads)."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.lock = threading.Lock()
            self.phases: dict[str, tuple[str | None, int]] = {}
            self.last = time.monotonic()
            self.start = self.last

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            with self.lock:
                self.phases[phase_name] = (parent_phase, num_steps)

        def step_complete(self, phase_name, step) -> bool:
            with self.lock:
                now = time.monotonic()
                parent, steps = self.phases.get(phase_name, (None, 0))
                if parent is None and now - self.last >= SAY_EVERY_S:
                    self.last = now
                    progress(f"{stage}: {phase_name} {step + 1}/{steps} ({now - self.start:.0f} s)")
            return True  # never cancel

        def phase_finish(self, phase_name) -> None:
            with self.lock:
                self.phases.pop(phase_name, None)

    return Monitor()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
