"""Which questions a step asks: templates the model still gets wrong are asked more often.

With every category drawn equally often, the templates learnt in the first few hundred steps (how
many beeps, which word: 100 % held-out) kept a third of the questions to the end of the run while
the ones still being learnt (the colour of a named shape, at what second) kept rising when the
budget ran out. `TemplateErrors` keeps, per template, a running share of the answers the model got
wrong in training (teacher-forced, the whole answer right or not) and `pick_questions` draws a
clip's templates in proportion to `FLOOR + error`: a template is never dropped, and one that is
always answered right is asked about a tenth as often as one that never is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from vinci_edge.avtask.questions import CATEGORIES, TEMPLATES, Question

RATE = 0.02  # weight of one answer in a template's running error
FLOOR = 0.1  # the weight of a template that is always answered right


class TemplateErrors:
    """Running error per template, starting at 1 (nothing learnt): part of the training state."""

    def __init__(self, errors: Mapping[str, float] | None = None) -> None:
        self.errors = {t: 1.0 for t in TEMPLATES}
        if errors is not None:
            unknown = set(errors) - set(TEMPLATES)
            if unknown:
                raise ValueError(f"unknown question templates in a saved run: {sorted(unknown)}")
            self.errors.update({t: float(e) for t, e in errors.items()})

    def update(self, questions: Sequence[Question], right: Sequence[bool]) -> None:
        for q, ok in zip(questions, right, strict=True):
            self.errors[q.template] += RATE * ((0.0 if ok else 1.0) - self.errors[q.template])

    def weights(self) -> dict[str, float]:
        return {t: FLOOR + e for t, e in self.errors.items()}

    def to_dict(self) -> dict[str, float]:
        """Unrounded: a resumed run must draw exactly what the uninterrupted one would."""
        return dict(self.errors)


def pick_questions(
    questions: list[Question],
    k: int,
    rng: np.random.Generator,
    weights: Mapping[str, float] | None = None,
) -> list[Question]:
    """k questions of a clip, without repeats where possible. Without `weights`, each from a
    category drawn uniformly among those the clip has (the rarer audio-visual questions are asked
    as often as the others); with them, each from a template the clip has, drawn in proportion to
    its weight."""
    key = (lambda q: q.category) if weights is None else (lambda q: q.template)
    groups: dict[str, list[Question]] = {}
    for q in questions:
        groups.setdefault(key(q), []).append(q)
    order = CATEGORIES if weights is None else TEMPLATES
    names = [name for name in order if name in groups]
    p = None
    if weights is not None:
        w = np.array([weights[t] for t in names], np.float64)
        p = w / w.sum()
    picked: list[Question] = []
    for _ in range(k):
        drawn = int(rng.integers(len(names))) if p is None else int(rng.choice(len(names), p=p))
        pool = groups[names[drawn]]
        fresh = [q for q in pool if q not in picked] or pool
        picked.append(fresh[int(rng.integers(len(fresh)))])
    return picked
