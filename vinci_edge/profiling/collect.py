"""The whole profile of one request: every engine, each in a fresh process unless told otherwise
(`isolate.py`: one engine's memory never shows in another's peak RSS), with the machine's memory read
bandwidth measured around them, the bandwidth bound of each decoder, and their comparison."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from vinci_edge.profiling import aggregate, bandwidth
from vinci_edge.profiling.isolate import profile_in_subprocess
from vinci_edge.profiling.profiler import EngineTarget, RequestSpec, add_bound, machine_info, profile_engine
from vinci_edge.profiling.schema import SCHEMA_NAME, SCHEMA_VERSION
from vinci_edge.progress import Progress, silent


def profile(
    targets: list[EngineTarget],
    req: RequestSpec,
    isolate: bool = True,
    say: Progress | None = None,
    measure_bandwidth: Callable[[], dict[str, Any]] = bandwidth.measure_read_bandwidth,
) -> dict[str, Any]:
    """The whole profile.json object for one request on one or more engines."""
    say = say or silent
    # Bandwidth before and after the engines, the best kept: other work on the machine only lowers it.
    say("measuring the memory read bandwidth")
    samples = [measure_bandwidth()]
    engines = []
    for target in targets:
        run = profile_in_subprocess if isolate else profile_engine
        engines.append(run(target, req, say))
    say("measuring the memory read bandwidth again")
    samples.append(measure_bandwidth())
    bw = max(samples, key=lambda b: b["bytes_per_second"])
    bw["samples_bytes_per_second"] = [b["bytes_per_second"] for b in samples]
    say(f"read bandwidth {bw['bytes_per_second'] / 1e9:.1f} GB/s ({bw['threads']} threads)")
    for e in engines:
        add_bound(e, bw["bytes_per_second"])
    return {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**machine_info(), "memory_bandwidth": bw},
        "request": asdict(req),
        "isolated": isolate,
        "engines": engines,
        "comparison": aggregate.compare(engines) if len(engines) > 1 else None,
    }
