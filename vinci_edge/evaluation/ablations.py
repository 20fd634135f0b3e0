"""The paper's ablations in miniature: each ablation's accuracy per category beside the full
recipe's, the change in points with its 95% interval (as in OmniVinci's Tables 7-9).

Input: a task-eval report (task_accuracy.json, with its "answers") whose runs are named
`<ablation>-s<seed>` (`none-s0`, `no-teg-s1`, ...), every run on the same questions. An ablation's
accuracy pools its seeds (Wilson interval); its change from `none` is paired: ablation seed s
against `none` seed s on the same question, averaged over seeds and questions, with the normal
interval of that mean (the question-to-question variation of the difference). It does not cover
the variation between training seeds, which the per-seed table shows.

    python -m vinci_edge.evaluation.ablations --report RUN/report/task_accuracy.json --out RUN/ablations
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from html import escape
from pathlib import Path
from typing import Any

from vinci_edge.avtask.questions import CATEGORIES
from vinci_edge.errors import VinciEdgeError
from vinci_edge.evaluation.task_eval import Z95, wilson
from vinci_edge.output_folder import check_writable_dir, write_texts
from vinci_edge.svg import FONT, PALETTE

BASE = "none"
COLUMNS = ("overall", *CATEGORIES)
RUN_NAME = re.compile(r"^(?P<ablation>[a-z0-9-]+)-s(?P<seed>\d+)$")
NAMES = ("ablations.json", "ablations.md", "ablations.svg")


def ablation_table(report: dict[str, Any]) -> dict[str, Any]:
    """{"seeds": {ablation: [seeds]}, "rows": {ablation: {column: cell}}}; a cell holds n, right,
    accuracy, ci95, per_seed accuracies and, for every ablation but `none`, delta with delta_ci95
    (fractions; the paired change from `none`)."""
    answers: dict[tuple[str, int], list[dict]] = {}
    for name, scored in report["answers"].items():
        match = RUN_NAME.match(name)
        if match is None:
            raise ValueError(f"run {name!r} is not named <ablation>-s<seed>")
        answers[(match["ablation"], int(match["seed"]))] = scored
    keys = [[(s["clip"], s["question"]) for s in v] for v in answers.values()]
    if any(k != keys[0] for k in keys):
        raise ValueError("the runs answered different questions: evaluate them on one split")
    ablations = sorted({a for a, _ in answers}, key=lambda a: (a != BASE, a))
    if BASE not in ablations:
        raise ValueError(f"no {BASE}-s<seed> run: the deltas need the full recipe")
    seeds = {a: sorted(s for b, s in answers if b == a) for a in ablations}
    rows = {}
    for a in ablations:
        rows[a] = {}
        for column in COLUMNS:
            rows[a][column] = _cell(answers, a, seeds, column)
    return {"seeds": seeds, "rows": rows}


def _in(column: str, s: dict) -> bool:
    return column == "overall" or s["category"] == column


def _cell(answers: dict, ablation: str, seeds: dict, column: str) -> dict[str, Any]:
    per_seed, right, n = {}, 0, 0
    for seed in seeds[ablation]:
        marks = [s["right"] for s in answers[(ablation, seed)] if _in(column, s)]
        per_seed[seed] = sum(marks) / len(marks) if marks else None
        right += sum(marks)
        n += len(marks)
    lo, hi = wilson(right, n)
    cell: dict[str, Any] = {
        "n": n,
        "right": right,
        "accuracy": right / n if n else None,
        "ci95": [lo, hi],
        "per_seed": per_seed,
    }
    paired = [s for s in seeds[ablation] if s in seeds[BASE]]
    if ablation != BASE and paired:
        diffs = []
        for seed in paired:
            ours = answers[(ablation, seed)]
            base = answers[(BASE, seed)]
            diffs += [int(x["right"]) - int(y["right"]) for x, y in zip(ours, base) if _in(column, x)]
        cell["delta"], cell["delta_ci95"] = _mean_interval(diffs)
        cell["paired_seeds"] = paired
    return cell


def _mean_interval(xs: list[int]) -> tuple[float | None, list[float] | None]:
    if not xs:
        return None, None
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, [mean, mean]
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    half = Z95 * math.sqrt(var / len(xs))
    return mean, [mean - half, mean + half]


def markdown(table: dict[str, Any], split: dict[str, Any] | None = None) -> str:
    lines = ["# Ablations in miniature", ""]
    if split:
        lines += [f"{split['questions']} held-out questions about {split['clips']} clips per run.", ""]
    lines += [
        "Accuracy in % (seeds pooled) [95% interval]; under it the change from the full recipe in "
        "points, paired by seed and question, [95% interval]. That interval covers the sampling of "
        "questions, not of training seeds: with few seeds, trust a change whose sign every seed shares "
        "(the per-seed table below).",
        "",
        "| recipe | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for a, row in table["rows"].items():
        seeds = ",".join(map(str, table["seeds"][a]))
        label = "full recipe" if a == BASE else f"{a}"
        acc = []
        for column in COLUMNS:
            c = row[column]
            text = (
                "-"
                if c["accuracy"] is None
                else f"{100 * c['accuracy']:.1f} [{100 * c['ci95'][0]:.1f}, {100 * c['ci95'][1]:.1f}]"
            )
            if c.get("delta") is not None:
                lo, hi = c["delta_ci95"]
                text += f"<br>{100 * c['delta']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
            acc.append(text)
        lines.append(f"| {label} (seeds {seeds}) | " + " | ".join(acc) + " |")
    lines += ["", "Per seed (accuracy in %):", "", "| recipe | seed | " + " | ".join(COLUMNS) + " |"]
    lines.append("|---|---|" + "---|" * len(COLUMNS))
    for a, row in table["rows"].items():
        for seed in table["seeds"][a]:
            cells = [
                "-" if row[c]["per_seed"][seed] is None else f"{100 * row[c]['per_seed'][seed]:.1f}"
                for c in COLUMNS
            ]
            lines.append(f"| {a} | {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def svg(table: dict[str, Any]) -> str:
    """One panel per column: each ablation's change from the full recipe (points) with its interval."""
    others = [a for a in table["rows"] if a != BASE]
    deltas = [v for a in others for c in COLUMNS for v in (table["rows"][a][c].get("delta_ci95") or [])]
    span = max([0.05] + [abs(v) for v in deltas])
    span = math.ceil(span * 20) / 20  # to 5 points
    label_w, plot_w, row_h = 110, 360, 16
    height = 40 + len(COLUMNS) * (len(others) * row_h + 22) + 30
    width = label_w + plot_w + 30
    x0 = label_w + plot_w / 2

    def x_of(v: float) -> float:
        return x0 + plot_w / 2 * v / span

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
        f'<text x="4" y="16" {FONT} font-weight="bold">'
        "Change from the full recipe (points), 95% intervals</text>",
    ]
    y = 34.0
    for column in COLUMNS:
        out.append(f'<text x="4" y="{y + 10}" {FONT} font-weight="bold">{escape(column)}</text>')
        y += 16
        for i, a in enumerate(others):
            c = table["rows"][a][column]
            out.append(f'<text x="{label_w - 6}" y="{y + 10}" text-anchor="end" {FONT}>{escape(a)}</text>')
            if c.get("delta") is not None:
                lo, hi = c["delta_ci95"]
                mid = y + 6
                colour = PALETTE[i % len(PALETTE)]
                out.append(
                    f'<line x1="{x_of(lo):.1f}" y1="{mid}" x2="{x_of(hi):.1f}" y2="{mid}" stroke="black"/>'
                )
                out.append(
                    f'<circle cx="{x_of(c["delta"]):.1f}" cy="{mid}" r="4" fill="{colour}">'
                    f"<title>{escape(a)} {escape(column)}: {100 * c['delta']:+.1f} "
                    f"[{100 * lo:+.1f}, {100 * hi:+.1f}]</title></circle>"
                )
            y += row_h
        y += 6
    out.append(f'<line x1="{x0}" y1="30" x2="{x0}" y2="{y}" stroke="#888"/>')
    for t in (-span, -span / 2, 0.0, span / 2, span):
        out.append(f'<text x="{x_of(t):.1f}" y="{y + 14}" text-anchor="middle" {FONT}>{100 * t:+g}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write(table: dict[str, Any], out: Path, split: dict[str, Any] | None = None) -> list[Path]:
    texts = (json.dumps({"split": split, **table}, indent=2) + "\n", markdown(table, split), svg(table))
    return write_texts(out, dict(zip(NAMES, texts)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", required=True, type=Path, help="task_accuracy.json of task-eval")
    ap.add_argument("--out", required=True, type=Path, help="folder for ablations.json / .md / .svg")
    args = ap.parse_args(argv)
    try:
        check_writable_dir(args.out)
    except VinciEdgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        report = json.loads(args.report.read_text(encoding="utf-8"))
        table = ablation_table(report)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {args.report}: {e}", file=sys.stderr)
        print(
            "hint: give the task_accuracy.json of a task-eval whose runs are <ablation>-s<seed>",
            file=sys.stderr,
        )
        return 2
    for path in write(table, args.out, report.get("split")):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
