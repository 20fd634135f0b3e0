"""The held-out split through one answerer, scored.

Each clip is preprocessed once (decode, frames, log-mel: the file path every user's file takes), and
each of its questions is laid out by the answerer's own prompt builder (`from_media`) and answered
greedily; the encoder rows of the clip are cached by content id, so the towers run once per clip.
An answer is right when it equals the ground truth after `normalise` (case, spaces, punctuation).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from vinci_edge import metrics as m
from vinci_edge.avtask.dataset import HeldOutQuestion, read_split
from vinci_edge.avtask.questions import CATEGORIES, normalise
from vinci_edge.evaluation.answerers import Answerer
from vinci_edge.kinds import Kind
from vinci_edge.progress import Progress, silent
from vinci_edge.request.modality import Context

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Scored:
    clip: str
    seed: int
    category: str
    template: str
    question: str
    truth: str
    said: str
    right: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    split: Path, answerer: Answerer, clips: int | None = None, progress: Progress = silent
) -> list[Scored]:
    """Every question of the split's first `clips` clips (all by default), answered and scored."""
    held_out = list(read_split(split))
    by_clip = [list(g) for _, g in groupby(held_out, key=lambda h: h.clip)]
    if clips is not None:
        by_clip = by_clip[:clips]
    video = answerer.prompts.modalities[Kind.VIDEO]
    ctx = Context(answerer.prompts.encoders)
    scored: list[Scored] = []
    for i, questions in enumerate(by_clip):
        media = video.preprocess(questions[0].clip, ctx, m.Metrics()).chunks
        for h in questions:
            said = answerer.answer_text(answerer.prompts.from_media(h.question.question, media))
            scored.append(_score(h, said, split))
        if (i + 1) % 25 == 0 or i + 1 == len(by_clip):
            right = sum(s.right for s in scored)
            progress(f"{answerer.name}: {i + 1}/{len(by_clip)} clips, {right}/{len(scored)} right")
    return scored


def _score(h: HeldOutQuestion, said: str, split: Path) -> Scored:
    q = h.question
    return Scored(
        str(h.clip.relative_to(split)),
        h.seed,
        q.category,
        q.template,
        q.question,
        q.answer,
        said,
        normalise(said) == normalise(q.answer),
    )


def wilson(right: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion (sound near 0 and 1, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = right / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    lo = 0.0 if right == 0 else max(0.0, centre - half)
    hi = 1.0 if right == n else min(1.0, centre + half)  # exact at the ends, not 1 - 1e-16
    return lo, hi


def accuracy(scored: list[Scored]) -> dict[str, Any]:
    """Overall, per category and per template: n, right, accuracy and its 95% interval."""

    def cell(items: list[Scored]) -> dict[str, Any]:
        right = sum(s.right for s in items)
        lo, hi = wilson(right, len(items))
        return {
            "n": len(items),
            "right": right,
            "accuracy": right / len(items) if items else None,
            "ci95": [lo, hi],
        }

    by_cat: dict[str, list[Scored]] = defaultdict(list)
    by_template: dict[str, list[Scored]] = defaultdict(list)
    for s in scored:
        by_cat[s.category].append(s)
        by_template[s.template].append(s)
    return {
        "overall": cell(scored),
        "categories": {c: cell(by_cat[c]) for c in CATEGORIES if c in by_cat},
        "templates": {t: cell(v) for t, v in sorted(by_template.items())},
    }


def agreement(a: list[Scored], b: list[Scored]) -> dict[str, Any]:
    """How two answerers' answers on the same questions compare: identical answers, and questions
    one got right and the other wrong (a paired view: the intervals of two accuracies overlap long
    before their answers differ)."""
    if [(s.clip, s.question) for s in a] != [(s.clip, s.question) for s in b]:
        raise ValueError("the two runs answered different questions")
    same = sum(normalise(x.said) == normalise(y.said) for x, y in zip(a, b))
    return {
        "n": len(a),
        "same_answer": same,
        "same_answer_fraction": same / len(a) if a else None,
        "only_first_right": sum(x.right and not y.right for x, y in zip(a, b)),
        "only_second_right": sum(y.right and not x.right for x, y in zip(a, b)),
    }
