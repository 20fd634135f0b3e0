"""Question sampling by running error (training.curriculum)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from vinci_edge.avtask.questions import CATEGORIES, TEMPLATES, Question, questions_for
from vinci_edge.avtask.scene import sample_scene
from vinci_edge.training.curriculum import FLOOR, TemplateErrors, pick_questions


def _clip_with_every_category() -> list[Question]:
    for seed in range(200):
        qs = questions_for(sample_scene(seed))
        if {q.category for q in qs} == set(CATEGORIES) and len({q.template for q in qs}) >= 8:
            return qs
    raise AssertionError("no clip with every category in 200 seeds")


def test_templates_are_drawn_in_proportion_to_their_error():
    qs = _clip_with_every_category()
    present = sorted({q.template for q in qs})
    hard = present[0]
    errors = TemplateErrors({t: (1.0 if t == hard else 0.0) for t in TEMPLATES})
    picked = pick_questions(qs, 20_000, np.random.default_rng(0), errors.weights())
    counts = Counter(q.template for q in picked)
    assert set(counts) == set(present)  # a learnt template is still asked
    share = counts[hard] / len(picked)
    want = (1 + FLOOR) / (1 + FLOOR + FLOOR * (len(present) - 1))
    assert share == pytest.approx(want, abs=0.02)


def test_without_weights_each_category_is_drawn_uniformly():
    qs = _clip_with_every_category()
    picked = pick_questions(qs, 20_000, np.random.default_rng(1))
    counts = Counter(q.category for q in picked)
    for c in CATEGORIES:
        assert counts[c] / len(picked) == pytest.approx(0.25, abs=0.02)


def test_the_running_error_follows_the_answers_and_survives_a_save():
    qs = _clip_with_every_category()
    q = qs[0]
    errors = TemplateErrors()
    for _ in range(300):
        errors.update([q], [True])
    assert errors.errors[q.template] < 0.01  # learnt
    assert all(e == 1.0 for t, e in errors.errors.items() if t != q.template)
    errors.update([q], [False])
    assert errors.errors[q.template] > 0.01
    again = TemplateErrors(errors.to_dict())
    assert again.errors == errors.errors  # exactly: the draw after a resume depends on them
    with pytest.raises(ValueError, match="unknown question templates"):
        TemplateErrors({"no_such_template": 0.5})
