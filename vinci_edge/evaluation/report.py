"""The task-accuracy report: task_accuracy.json, task_accuracy.md and task_accuracy.svg.

    {"split": {...split.json}, "machine": {cpu, onnxruntime, integer_gemm_exact},
     "runs": [{"name", "source", "accuracy": {overall, categories,
     templates}, "seconds"}], "baseline": NAME, "agreement": {NAME: agreement with the baseline},
     "goals": {...}}

Accuracies are fractions with 95% Wilson intervals; the Markdown adds each run's change from the
baseline (the fp32 engine when there is one) in points.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from vinci_edge.avtask.questions import CATEGORIES
from vinci_edge.output_folder import write_texts
from vinci_edge.svg import FONT, PALETTE, nice_ticks

REPORT_NAMES = ("task_accuracy.json", "task_accuracy.md", "task_accuracy.svg")
COLUMNS = ("overall", *CATEGORIES)


def write_task_report(report: dict[str, Any], out: Path) -> list[Path]:
    texts = (json.dumps(report, indent=2) + "\n", markdown(report), svg(report))
    return write_texts(out, dict(zip(REPORT_NAMES, texts)))


def cell(acc: dict[str, Any], column: str) -> dict[str, Any] | None:
    return acc["overall"] if column == "overall" else acc["categories"].get(column)


def _pct(c: dict[str, Any] | None) -> str:
    if not c or c["accuracy"] is None:
        return "-"
    lo, hi = c["ci95"]
    return f"{100 * c['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def markdown(report: dict[str, Any]) -> str:
    split = report["split"]
    lines = [
        "# Task accuracy on the held-out split",
        "",
        f"{split['questions']} questions about {split['clips']} clips (generator version "
        f"{split['generator_version']}); accuracy in %, [95% interval]; greedy answers compared "
        "with the ground truth after case and punctuation are dropped.",
        "",
        "| run | " + " | ".join(COLUMNS) + " | n |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for run in report["runs"]:
        acc = run["accuracy"]
        cells = [_pct(cell(acc, c)) for c in COLUMNS]
        lines.append(f"| {run['name']} | " + " | ".join(cells) + f" | {acc['overall']['n']} |")
    base = report.get("baseline")
    if base and report.get("agreement"):
        lines += [
            "",
            f"Against {base}, question by question (change in points; answers identical; right only "
            f"in {base} / only in the run):",
            "",
            "| run | overall change | av_temporal change | same answer | only baseline right | "
            "only run right |",
            "|---|---|---|---|---|---|",
        ]
        by_name = {r["name"]: r for r in report["runs"]}
        for name, ag in report["agreement"].items():
            deltas = []
            for column in ("overall", "av_temporal"):
                a, b = cell(by_name[name]["accuracy"], column), cell(by_name[base]["accuracy"], column)
                deltas.append(f"{100 * (a['accuracy'] - b['accuracy']):+.1f}" if a and b else "-")
            lines.append(
                f"| {name} | {deltas[0]} | {deltas[1]} | {ag['same_answer']}/{ag['n']} | "
                f"{ag['only_second_right']} | {ag['only_first_right']} |"  # agreement(run, baseline)
            )
    if report.get("goals"):
        lines += ["", "Goals: " + "; ".join(f"{k}: {v}" for k, v in report["goals"].items())]
    machine = report.get("machine")
    if machine:
        exact = machine["integer_gemm_exact"]
        verdict = ", ".join(f"{k} {'exact' if v else 'NOT exact'}" for k, v in exact.items())
        lines += [
            "",
            f"Machine: {machine['cpu']}, ONNX Runtime {machine['onnxruntime']}; its integer GEMM at "
            f"int8-compute's ranges: {verdict} (where not exact, int8-compute prefills on its decode graph).",
        ]
    return "\n".join(lines) + "\n"


def svg(report: dict[str, Any]) -> str:
    """Horizontal bars, one group per column (overall, then each category), one bar per run, with
    the 95% interval as a whisker."""
    runs = report["runs"]
    label_w, plot_w, bar_h, gap, group_gap = 170, 420, 12, 2, 14
    rows = len(COLUMNS) * len(runs)
    height = 60 + rows * (bar_h + gap) + len(COLUMNS) * group_gap + 40
    width = label_w + plot_w + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
        f'<text x="4" y="16" {FONT} font-weight="bold">Task accuracy (%), 95% intervals</text>',
    ]
    x0 = label_w

    def x_of(v: float) -> float:
        return x0 + plot_w * v

    y = 34.0
    for column in COLUMNS:
        out.append(f'<text x="4" y="{y + 10}" {FONT} font-weight="bold">{escape(column)}</text>')
        y += 14
        for i, run in enumerate(runs):
            c = cell(run["accuracy"], column)
            if c is None or c["accuracy"] is None:
                continue
            colour = PALETTE[i % len(PALETTE)]
            out.append(
                f'<text x="{x0 - 6}" y="{y + 10}" text-anchor="end" {FONT}>{escape(run["name"])}</text>'
            )
            out.append(
                f'<rect x="{x0}" y="{y}" width="{plot_w * c["accuracy"]:.2f}" height="{bar_h}" '
                f'fill="{colour}"><title>{escape(run["name"])} {escape(column)}: {_pct(c)}</title></rect>'
            )
            lo, hi = c["ci95"]
            mid = y + bar_h / 2
            out.append(
                f'<line x1="{x_of(lo):.2f}" y1="{mid}" x2="{x_of(hi):.2f}" y2="{mid}" stroke="black"/>'
            )
            y += bar_h + gap
        y += group_gap
    for t in nice_ticks(100.0):
        x = x_of(t / 100)
        out.append(f'<line x1="{x:.1f}" y1="30" x2="{x:.1f}" y2="{y}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{y + 14}" text-anchor="middle" {FONT}>{t:g}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
