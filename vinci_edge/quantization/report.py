"""The accuracy report's three files: accuracy.json, accuracy.md (the table) and accuracy.svg (a plot).

The JSON is `accuracy.measure.measure()`'s dict as is (keys documented in docs/quantization.md); the
Markdown and the plot are views of it, so they never disagree with it. Every file is written to a
temporary name and renamed: an interrupted run leaves the previous report, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from html import escape
from pathlib import Path
from typing import Any

from vinci_edge import stages as st
from vinci_edge.quantization.accuracy.inputs import TOWERS
from vinci_edge.svg import FONT, PALETTE, nice_ticks

FILES = ("accuracy.json", "accuracy.md", "accuracy.svg")
STAGE_ORDER = (*TOWERS, st.DECODER)


def write_report(report: dict[str, Any], out: str | Path) -> list[Path]:
    """accuracy.json, accuracy.md and accuracy.svg into `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    texts = {
        "accuracy.json": json.dumps(report, indent=2) + "\n",
        "accuracy.md": markdown(report),
        "accuracy.svg": svg_plot(report),
    }
    paths = []
    for name, text in texts.items():
        paths.append(_atomic_write(out / name, text))
    return paths


def _atomic_write(path: Path, text: str) -> Path:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write(text)
    os.chmod(f.name, 0o644)  # NamedTemporaryFile makes 0600 files; a report is meant to be shared
    Path(f.name).replace(path)
    return path


# --------------------------------------------------------------------------------------------------
# Markdown


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def _stage_cell(s: dict[str, Any] | None) -> str:
    """'cosine / max rel. error' of a stage, its precision underneath when it is not fp32."""
    if not s or "cosine" not in s:
        return "-"
    cell = f"{s['cosine']:.5f} / {100 * s['max_rel_err']:.2f}%"
    return cell if s.get("precision", "fp32") == "fp32" else f"{cell} ({s['precision']})"


def goal_mark(v: dict[str, Any]) -> str:
    g = v.get("goal")
    if not g:
        return "-"
    if not g["met"]:
        return f"NOT met (<= {g['limit_pct']:g}%)"
    if g.get("met_beyond_noise", True):
        return f"met (<= {g['limit_pct']:g}%)"
    return f"met, but the 95% interval reaches past {g['limit_pct']:g}%"


def precision_label(v: dict[str, Any]) -> str:
    """'int8-dynamic' when every stage has it, else 'vision=int8,...,decoder=int4' (fp32 left out)."""
    prec = v.get("precision") or {}
    if "requested" in prec:
        return prec["requested"]
    values = set(prec.values())
    if len(values) == 1:
        return next(iter(values))
    return ",".join(f"{s}={p}" for s, p in prec.items() if p != "fp32") or "fp32"


def markdown(report: dict[str, Any]) -> str:
    # Only stages that were compared (a towers-only report has no decoder column).
    stages = [
        s for s in STAGE_ORDER if any("cosine" in v.get("stages", {}).get(s, {}) for v in report["variants"])
    ]
    has_llm = report["fp32"].get("perplexity") is not None
    head = [
        "variant",
        "precision",
        *(f"{s} cos / err" if s != st.DECODER else "decoder logits cos / err" for s in stages),
    ]
    if has_llm:
        head += ["perplexity (vs fp32)", "goal", "top-1", "answers (prefix / tokens)"]
    head += ["size MB (x fp32)"]
    rows = []
    ref = report["fp32"]
    fp32_row = ["**fp32**", "fp32", *("1 / 0%" for _ in stages)]
    if has_llm:
        fp32_row += [f"{ref['perplexity']:.3f}", "-", "1", "1 / 1"]
    fp32_row += [f"{_mb(ref['size']['stage_bytes'])} (1.00)"]
    rows.append(fp32_row)
    for v in report["variants"]:
        if v.get("error"):
            cells = [f"**{v['name']}**", precision_label(v), *("-" for _ in stages)]
            if has_llm:
                cells += ["-", "-", "-", "-"]
            cells += [f"not measured: {v['error']}"]
            rows.append(cells)
            continue
        cells = [f"**{v['name']}**", precision_label(v), *(_stage_cell(v["stages"].get(s)) for s in stages)]
        if has_llm:
            llm = v.get("llm")
            if llm:
                a = llm["answers"]
                answers = f"{a['prefix_agreement']:.2f} / {a['token_agreement']:.2f}" if a["count"] else "-"
                ci = llm.get("perplexity_change_ci95_pct")
                interval = f"; 95%: {ci[0]:+.1f} to {ci[1]:+.1f}" if ci else ""
                cells += [
                    f"{llm['perplexity']:.3f} ({llm['perplexity_change_pct']:+.2f}%{interval})",
                    goal_mark(v),
                    f"{llm['top1_agreement']:.3f}",
                    answers,
                ]
            else:
                cells += ["-", "-", "-", "-"]
        size = v["size"]
        cells += [f"{_mb(size['stage_bytes'])} ({size['ratio_vs_fp32']:.2f})"]
        rows.append(cells)

    lines = [
        "# Quantization accuracy",
        "",
        f"Reference: `{report['fp32_engine']}` (fp32). Model `{report['model_id']}`.",
        "",
        _table(head, rows),
        "",
        "Stage cells: cosine similarity (mean over output rows) / max relative error (max|q-f| / max|f|) "
        "of the stage output against fp32, each stage fed the fp32 inputs"
        + (
            "; the decoder's is over its logits. Perplexity: teacher-forced through the runtime decoder "
            f"over {ref.get('predicted_tokens', '?')} predicted tokens, with a 95 % interval of the change "
            "(paired, batch means); goal: INT8 / FP8 within 2 %, INT4 within 8 % of fp32. Top-1: argmax "
            "agreement with fp32 over the text windows. Answers: greedy answers' identical tokens "
            "before the first divergence / at the same index"
            if has_llm
            else " (towers only: the LLM was not measured)"
        )
        + ". Size: the stage graphs and their weights (the embedding table and tokenizer are not "
        "quantized).",
        "",
        "Inputs:",
        "",
    ]
    lines += [f"- {stage}: {what}" for stage, what in report.get("inputs", {}).items()]
    s = report["settings"]
    if has_llm:
        lines.append(
            f"- answers: {len(s['prompts'])} prompts (those whose media are present), "
            f"{s['answer_tokens']} tokens each, EOS ignored"
        )
    return "\n".join(lines) + "\n"


def _table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# SVG


def svg_plot(report: dict[str, Any]) -> str:
    """Two panels of horizontal bars per variant: perplexity change vs fp32 (%) with the goal
    lines, and size on disk (MB) with fp32's; towers-only reports get the worst stage cosine gap."""
    ok = [v for v in report["variants"] if not v.get("error")]
    has_llm = report["fp32"].get("perplexity") is not None
    if has_llm:
        left = [(v["name"], v["llm"]["perplexity_change_pct"] if v.get("llm") else 0.0) for v in ok]
        whiskers = [(v.get("llm") or {}).get("perplexity_change_ci95_pct") for v in ok]
        left_title = "perplexity change vs fp32, 95% interval; dashed: goals INT8/FP8, INT4"
        left_unit = "%"
        marks = [2.0, 8.0]
    else:
        left = [
            (
                v["name"],
                1e6 * max((1 - s["cosine"] for s in v["stages"].values() if "cosine" in s), default=0),
            )
            for v in ok
        ]
        left_title, left_unit, marks = "worst stage 1 - cosine", "x 1e-6", []
        whiskers = []
    sizes = [("fp32", report["fp32"]["size"]["stage_bytes"] / 1e6)]
    sizes += [(v["name"], v["size"]["stage_bytes"] / 1e6) for v in ok]
    label_w, panel_w, bar_h, gap = 150, 300, 18, 6
    rows = max(len(left), len(sizes))
    height = 40 + rows * (bar_h + gap) + 50
    width = 2 * (label_w + panel_w) + 60
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
        f'<text x="4" y="16" {FONT} font-weight="bold">Quantization: accuracy and size</text>',
    ]
    out += _bar_panel(
        left, 0, label_w, panel_w, bar_h, gap, left_title, left_unit, marks, PALETTE[2], whiskers
    )
    out += _bar_panel(
        sizes, label_w + panel_w + 40, label_w, panel_w, bar_h, gap, "size on disk", "MB", [], PALETTE[0]
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _bar_panel(
    rows: list[tuple[str, float]],
    x0: float,
    label_w: float,
    plot_w: float,
    bar_h: float,
    gap: float,
    title: str,
    unit: str,
    marks: list[float],
    color: str,
    whiskers: list[list[float] | None] | None = None,
) -> list[str]:
    """Bars from a zero line; negative values go left of it (a variant can beat fp32 by noise).
    `whiskers`: an interval per bar (or None), drawn as a line across it."""
    # With goals, the axis stops at 4x the largest: a variant far off (static INT8 at +200 %) would
    # otherwise squash the ones near the goals to slivers. Its bar is cut and marked, its label exact.
    limit = 4 * max(marks) if marks else float("inf")
    lo = max(-limit, min([0.0, *(v for _, v in rows)]))
    hi = min(limit, max([0.0, *(v for _, v in rows), *marks]))
    neg = nice_ticks(-lo)[-1] if lo < 0 else 0.0
    pos = nice_ticks(hi)[-1] if hi > 0 else 1.0
    span = neg + pos
    zero = x0 + label_w + plot_w * neg / span

    def x_of(v: float) -> float:
        return zero + plot_w * v / span

    out = [f'<text x="{x0 + label_w}" y="32" {FONT}>{escape(title)} ({escape(unit)})</text>']
    y = 40.0
    for i, (name, v) in enumerate(rows):
        shown = min(max(v, -neg), pos)
        xa, xb = sorted((zero, x_of(shown)))
        out.append(
            f'<text x="{x0 + label_w - 6}" y="{y + 13}" text-anchor="end" {FONT}>{escape(name)}</text>'
        )
        out.append(
            f'<rect x="{xa:.2f}" y="{y}" width="{max(xb - xa, 0.5):.2f}" height="{bar_h}" fill="{color}">'
            f"<title>{escape(name)}: {v:.4g} {escape(unit)}</title></rect>"
        )
        w = whiskers[i] if whiskers and i < len(whiskers) else None
        if w:
            wa, wb = (x_of(min(max(e, -neg), pos)) for e in w)
            out.append(
                f'<line x1="{wa:.2f}" y1="{y + bar_h / 2}" x2="{wb:.2f}" y2="{y + bar_h / 2}" stroke="#222"/>'
            )
        cut = " (axis cut)" if shown != v else ""
        out.append(f'<text x="{xb + 4:.2f}" y="{y + 13}" {FONT}>{v:.3g}{cut}</text>')
        y += bar_h + gap
    out.append(f'<line x1="{zero:.2f}" y1="36" x2="{zero:.2f}" y2="{y}" stroke="#444"/>')
    # Goals are "within": a line each side of zero where the axis reaches that far.
    for value in marks:
        for v in (value, -value) if -value >= -neg else (value,):
            x = x_of(v)
            out.append(
                f'<line x1="{x:.2f}" y1="36" x2="{x:.2f}" y2="{y}" stroke="#e15759" stroke-dasharray="4 3"/>'
            )
            out.append(f'<text x="{x:.2f}" y="{y + 14}" text-anchor="middle" {FONT}>{v:g}</text>')
    for t in ([-neg] if neg else []) + [0.0, pos]:
        out.append(f'<text x="{x_of(t):.2f}" y="{y + 30}" text-anchor="middle" {FONT}>{t:g}</text>')
    return out
