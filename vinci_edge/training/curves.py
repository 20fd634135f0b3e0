"""training_curves.svg: when a run learnt each kind of question (from its training record).

Which questions a run answers differs from run to run (docs/avtask.md, "binding"): one learns the
colour of a named shape, another which shape is a colour, a third neither. The record's joint
history points carry each template's running training error; this draws 1 - error, the share of a
template's recent answers that were right (teacher-forced), against the joint step, for every
template outside the audio category (those are learnt in the first few hundred steps).
"""

from __future__ import annotations

from typing import Any

from vinci_edge import svg
from vinci_edge.avtask.questions import TEMPLATE_CATEGORY

DRAWN = tuple(name for name, category in TEMPLATE_CATEGORY.items() if category != "audio")


def curves_svg(record: dict[str, Any]) -> str | None:
    """The chart, or None where the record has no template errors (questions drawn by category)."""
    points = [p for p in record.get("history", []) if p.get("phase") == "joint" and "template_errors" in p]
    if not points:
        return None
    every = points[1]["step"] - points[0]["step"] if len(points) > 1 else 1
    series = [
        (name.replace("_", " "), [100.0 * (1.0 - p["template_errors"][name]) for p in points])
        for name in DRAWN
    ]
    recipe = record.get("recipe", {})
    title = f"Training answers right per question template (seed {recipe.get('seed', '?')})"
    return svg.line_chart(series, "joint step", "% right (running, teacher-forced)", title, x_step=every)
