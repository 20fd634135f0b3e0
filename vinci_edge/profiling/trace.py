"""trace.json: the profile's records as Chrome / Perfetto trace events (chrome://tracing, ui.perfetto.dev).

One process per engine, one thread ("requests"), complete ("X") events in microseconds:

    load                          engine (manifest, tokenizer, text table) + one span per session
    request #i                    one per run, warm-ups included and named so
      media_decode ... prefill    the stage records of that run, with their attrs as args
      decode                      from the first decode step to the last
        decode step k             one per generated token after the first
    first token                   an instant event

Times are floored to whole microseconds from integer nanoseconds, so a child that lies within its
parent in nanoseconds also does in the trace (floats could round an end past the parent's).
"""

from __future__ import annotations

from typing import Any

from vinci_edge import metrics as m

TID = 1


def _span(name: str, cat: str, start_ns: int, end_ns: int, pid: int, args: dict[str, Any]) -> dict[str, Any]:
    ts = start_ns // 1000
    return {
        "name": name,
        "cat": cat,
        "ph": "X",
        "ts": ts,
        "dur": end_ns // 1000 - ts,
        "pid": pid,
        "tid": TID,
        "args": args,
    }


def _load_events(load: dict[str, Any], pid: int) -> list[dict[str, Any]]:
    events = [
        _span("load", "load", load["start_ns"], load["end_ns"], pid, {"total_s": load["total_s"]}),
        _span("engine", "load", load["start_ns"], load["engine_end_ns"], pid, {"engine_s": load["engine_s"]}),
    ]
    for r in load["records"]:
        name = f"session {r['attrs'].get('stage', '')}".strip()
        events.append(_span(name, "load", r["start_ns"], r["end_ns"], pid, r["attrs"]))
    return events


def _run_events(run: dict[str, Any], pid: int) -> list[dict[str, Any]]:
    label = f"request #{run['index']}" + (" (warm-up)" if run["warmup"] else "")
    args = {k: run[k] for k in ("warmup", "prompt_positions", "new_tokens", "stop_reason")}
    events = [_span(label, "request", run["start_ns"], run["end_ns"], pid, args)]
    steps = [r for r in run["records"] if r["name"] == m.DECODE]
    for r in run["records"]:
        if r["name"] != m.DECODE:
            events.append(_span(r["name"], "stage", r["start_ns"], r["end_ns"], pid, r["attrs"]))
    if steps:
        first, last = steps[0]["start_ns"], steps[-1]["end_ns"]
        events.append(_span(m.DECODE, "stage", first, last, pid, {"steps": len(steps)}))
        for k, r in enumerate(steps, start=1):
            events.append(_span(f"decode step {k}", "decode", r["start_ns"], r["end_ns"], pid, r["attrs"]))
    if run["first_token_ns"] is not None:
        events.append(
            {
                "name": "first token",
                "cat": "request",
                "ph": "i",
                "s": "t",
                "ts": run["first_token_ns"] // 1000,
                "pid": pid,
                "tid": TID,
                "args": {},
            }
        )
    return events


def chrome_trace(profile: dict[str, Any]) -> dict[str, Any]:
    """The trace-event JSON object for a whole profile (every engine, every run)."""
    events: list[dict[str, Any]] = []
    for pid, engine in enumerate(profile["engines"], start=1):
        events += [
            {"name": "process_name", "ph": "M", "pid": pid, "tid": TID, "args": {"name": engine["label"]}},
            {"name": "thread_name", "ph": "M", "pid": pid, "tid": TID, "args": {"name": "requests"}},
        ]
        events += _load_events(engine["load"], pid)
        for run in engine["runs"]:
            events += _run_events(run, pid)
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"schema": "vinci-edge-trace", "created": profile["created"]},
    }
