"""profile.md and profile.html from a profile.json object.

Both render the same tables (built once, as rows of strings); the HTML page adds inline-SVG charts:
the stage breakdown of a request, the latency of every decode step, decode against its bound.
Stage shares use means, which add up (the mean of per-run sums is the sum of the means), so the
stages plus "unaccounted" make exactly the mean end-to-end time; percentiles do not add up.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from vinci_edge import stages as st
from vinci_edge import svg
from vinci_edge.profiling.aggregate import stage_order

STAGE_LABELS = {
    "media_decode": "media decode",
    "frame_preprocess": "frame preprocessing",
    "log_mel": "log-mel",
    "tokenize": "tokenize + plan",
    "vision": "vision",
    "audio": "audio",
    "stitch": "TEG + CRTE (stitch)",
    "prefill": "prefill",
    "decode": "decode (all steps)",
}


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


# ---- number formatting ------------------------------------------------------------------------------
def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3g}" if seconds < 0.1 else f"{seconds * 1e3:.0f}"


def num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}g}" if abs(x) < 10**digits else f"{x:.0f}"


def mib(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**20:.1f}"


def _q(stats: dict[str, Any], fmt=ms) -> list[str]:
    return [fmt(stats.get(k)) for k in ("p50", "p90", "p99")]


# ---- tables -----------------------------------------------------------------------------------------
def engine_table(profile: dict[str, Any]) -> Table:
    rows = []
    for e in profile["engines"]:
        dec = e["precision"].get(st.DECODER, {})
        # Quantized engines name their scheme in `precision` (int4, int8-dynamic, ...) next to `method`.
        precision = f"{dec.get('precision') or dec.get('dtype', '?')} ({dec.get('method', 'none')})"
        providers = sorted(set(e["providers"].values()))
        rows.append([
            e["label"], precision, ", ".join(providers),
            str(e["threads"] or "all cores"), e["stitch"], str(e["requests"]["prompt_positions"]),
            num(e["requests"]["new_tokens"].get("p50")), e["engine"],
        ])  # fmt: skip
    header = ["engine", "decoder precision", "providers", "threads", "stitch", "prompt positions",
              "new tokens", "folder"]  # fmt: skip
    return Table("Engines", header, rows)


def headline_table(e: dict[str, Any]) -> Table:
    r = e["requests"]
    rows = [
        ["time to first token (ms)", *_q(r["time_to_first_token_s"])],
        ["end to end (ms)", *_q(r["end_to_end_s"])],
        ["decode step (ms)", *_q(r["decode_step_s"])],
        ["decode tokens/s", *_q(r["decode_tokens_per_second"], num)],
        ["prefill tokens/s", *_q(r["prefill_tokens_per_second"], num)],
    ]
    note = f"{r['runs']} runs after warm-up; percentiles interpolate linearly between runs."
    return Table(f"{e['label']}: per request", ["", "p50", "p90", "p99"], rows, note)


def stage_table(e: dict[str, Any]) -> Table:
    r = e["requests"]
    e2e = r["end_to_end_s"].get("mean") or 0.0
    rows = []
    for s, times in r["stages_s"].items():
        share = 100 * times["mean"] / e2e if e2e else 0.0
        rows.append([STAGE_LABELS.get(s, s), *_q(times), ms(times["mean"]), f"{share:.1f}%"])
    un = r["unaccounted_s"]
    rows.append(
        ["unaccounted", *_q(un), ms(un.get("mean")), f"{100 * un.get('mean', 0) / e2e:.1f}%" if e2e else "-"]
    )
    rows.append(["end to end", *_q(r["end_to_end_s"]), ms(e2e), "100%"])
    b = r["overhead_budget"]
    note = (
        f"Unaccounted: time between stage records (sampling, detokenizing). Budget: under "
        f"{b['fraction']:.0%} of end to end + {b['seconds'] * 1e3:.0f} ms per run - "
        f"{'met by every run' if b['all_runs_within'] else 'NOT met by every run'}."
    )
    return Table(
        f"{e['label']}: stages (ms)", ["stage", "p50", "p90", "p99", "mean", "share of mean"], rows, note
    )


def load_table(e: dict[str, Any]) -> Table:
    load = e["load"]
    rows = [["engine (manifest, tokenizer, text table)", ms(load["engine_s"])]]
    rows += [[f"session: {k}", ms(v)] for k, v in load["sessions_s"].items()]
    rows.append(["total", ms(load["total_s"])])
    return Table(f"{e['label']}: load (ms, once per engine)", ["", "time"], rows)


def memory_table(e: dict[str, Any]) -> Table:
    mem = e["memory"]
    gpu = mem["gpu"]
    gpu_text = (
        f"{mib(gpu['peak_bytes'])} MiB ({gpu['source']})" if gpu["available"] else f"n/a: {gpu['reason']}"
    )
    rows = [
        ["RSS before loading", mib(mem["rss_before_load_bytes"])],
        ["peak RSS while loading", mib(mem["peak_rss_load_bytes"])],
        ["peak RSS while answering", mib(mem["peak_rss_requests_bytes"])],
        ["peak RSS", mib(mem["peak_rss_bytes"])],
    ]
    note = f"GPU memory: {gpu_text}"
    return Table(f"{e['label']}: memory (MiB)", ["", "MiB"], rows, note)


def size_table(e: dict[str, Any]) -> Table:
    sizes = e["sizes"]
    rows = [[name, ", ".join(st["files"]), mib(st["bytes"])] for name, st in sizes["stages"].items()]
    rows += [[name, name, mib(b)] for name, b in sizes["other"].items()]
    rows.append(["total", "the whole folder", mib(sizes["total_bytes"])])
    return Table(f"{e['label']}: size on disk (MiB)", ["part", "files", "MiB"], rows)


def bound_table(profile: dict[str, Any]) -> Table:
    bw = profile["machine"]["memory_bandwidth"]
    rows = []
    for e in profile["engines"]:
        b = e["bound"]
        rows.append([
            e["label"], f"{b['bandwidth_bytes_per_second'] / 1e9:.1f}", mib(b["weight_bytes_per_token"]),
            f"{mib(b['kv_bytes_per_token'])} ({b['context_positions']:.0f} pos.)", mib(b["bytes_per_token"]),
            num(b["bound_tokens_per_second"]), num(b["measured_tokens_per_second"]),
            "-" if b["percent_of_bound"] is None else f"{b['percent_of_bound']:.1f}%",
        ])  # fmt: skip
    note = (
        f"Bound = read bandwidth / bytes read per decode token (matmul weights incl. the output head, "
        f"plus the KV cache at the mean decode context). Bandwidth: {bw['method']}, "
        f"{bw['array_bytes'] / 2**20:.0f} MiB, {bw['threads']} thread(s), best of a measurement before "
        "and one after the engines."
    )
    if any((e["bound"]["percent_of_bound"] or 0) > 100 for e in profile["engines"]):
        note += (
            " Above 100%: the bandwidth passes ran at a busier moment than the decode did (other work on "
            "the machine); re-run on a quiet machine."
        )
    header = ["engine", "bandwidth GB/s", "weights MiB/token", "KV MiB/token", "total MiB/token",
              "bound tok/s", "measured tok/s", "% of bound"]  # fmt: skip
    return Table("Decode against the memory-bandwidth bound", header, rows, note)


def comparison_table(profile: dict[str, Any]) -> Table | None:
    comp = profile["comparison"]
    if not comp:
        return None
    rows = []
    for row in comp["rows"]:
        fmt, unit = (mib, "MiB") if row["unit"] == "bytes" else (num, row["unit"])
        cells = [fmt(row["values"][0])]
        for v, ratio in zip(row["values"][1:], row["ratios"][1:]):
            cells.append(f"{fmt(v)} ({'-' if ratio is None else f'{ratio:.2f}x'})")
        rows.append([f"{row['label']} ({unit})", row["better"], *cells])
    note = f"Ratio = value / {comp['baseline']}'s value; 'better' says which direction is an improvement."
    return Table(f"Comparison against {comp['baseline']}", ["metric", "better", *comp["labels"]], rows, note)


def all_tables(profile: dict[str, Any]) -> list[Table]:
    tables = [engine_table(profile)]
    for e in profile["engines"]:
        tables += [headline_table(e), stage_table(e), load_table(e), memory_table(e), size_table(e)]
    tables.append(bound_table(profile))
    comp = comparison_table(profile)
    return tables + ([comp] if comp else [])


# ---- Markdown ---------------------------------------------------------------------------------------
def _md_table(t: Table) -> str:
    cell = lambda s: str(s).replace("|", "\\|")
    lines = [f"## {t.title}", "", "| " + " | ".join(map(cell, t.header)) + " |"]
    lines.append("|" + "---|" * len(t.header))
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in t.rows]
    if t.note:
        lines += ["", t.note]
    return "\n".join(lines)


def _intro(profile: dict[str, Any]) -> list[str]:
    req, mach = profile["request"], profile["machine"]
    media = ", ".join(f"{k} {req[k]}" for k in ("video", "audio", "image") if req[k]) or "no media"
    return [
        f"Request: {media}; prompt {req['prompt']!r}; {req['max_new_tokens']} new tokens"
        f"{'' if req['stop_at_eos'] else ' (EOS ignored)'}; "
        f"{req['runs']} runs after {req['warmup']} warm-up.",
        f"Machine: {mach['cpu']}, {mach['cpu_count']} cores, {mach['platform']}; onnxruntime "
        f"{mach['onnxruntime']}; vinci-edge {mach['vinci_edge']}; created {profile['created']}.",
        "Each engine ran in its own process (peak RSS is its own)."
        if profile["isolated"]
        else "All engines ran in the profiling process (peak RSS includes it).",
    ]


def to_markdown(profile: dict[str, Any]) -> str:
    parts = ["# vinci-edge profile", "", *_intro(profile)]
    for t in all_tables(profile):
        parts += ["", _md_table(t)]
    return "\n".join(parts) + "\n"


# ---- HTML -------------------------------------------------------------------------------------------
def breakdown_chart(profile: dict[str, Any]) -> str:
    rows = []
    for e in profile["engines"]:
        r = e["requests"]
        segs = [
            (STAGE_LABELS.get(s, s), r["stages_s"][s]["mean"] * 1e3) for s in stage_order(set(r["stages_s"]))
        ]
        segs.append(("unaccounted", max(r["unaccounted_s"].get("mean", 0.0), 0.0) * 1e3))
        rows.append((e["label"], segs))
    return svg.stacked_bars(rows, "ms (mean per request)", "Where a request's time goes")


def decode_chart(profile: dict[str, Any]) -> str:
    series = [
        (e["label"], [s * 1e3 for s in e["requests"]["decode_step_median_s"]]) for e in profile["engines"]
    ]
    return svg.line_chart(
        series, "decode step", "ms per decode step (median over runs)", "Decode latency per token"
    )


def bound_chart(profile: dict[str, Any]) -> str:
    rows = []
    for e in profile["engines"]:
        b = e["bound"]
        measured = b["measured_tokens_per_second"] or 0.0
        headroom = max((b["bound_tokens_per_second"] or 0.0) - measured, 0.0)
        rows.append((e["label"], [("measured", measured), ("up to the bound", headroom)]))
    return svg.stacked_bars(rows, "decode tokens/s", "Decode against the memory-bandwidth bound")


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in t.rows)
    note = f'<p class="note">{escape(t.note)}</p>' if t.note else ""
    return f"<h2>{escape(t.title)}</h2><table><tr>{head}</tr>{body}</table>{note}"


CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.note { color: #555; font-size: 90%; }
figure { margin: 1em 0; }
"""


def to_html(profile: dict[str, Any]) -> str:
    intro = "".join(f"<p>{escape(p)}</p>" for p in _intro(profile))
    charts = "".join(
        f"<figure>{c}</figure>"
        for c in (breakdown_chart(profile), decode_chart(profile), bound_chart(profile))
    )
    tables = "".join(_html_table(t) for t in all_tables(profile))
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>vinci-edge profile</title>'
        f"<style>{CSS}</style></head><body><h1>vinci-edge profile</h1>{intro}{charts}{tables}</body></html>\n"
    )
