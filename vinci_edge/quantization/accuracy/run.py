"""One engine on the reference inputs: its tower outputs, its teacher-forced logits and its greedy
answers (kept for fp32, compared for the variants).

Answers are `answer_tokens` greedy tokens (EOS ignored, so every answer has the same length) to
real prompts through Pipeline.ask, prefill included: the whole request path a user's question takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vinci_edge import stages as st
from vinci_edge.progress import Progress
from vinci_edge.quantization.accuracy.inputs import Inputs
from vinci_edge.quantization.accuracy.settings import AccuracySettings, Prompt
from vinci_edge.quantization.accuracy.teacher_forcing import teacher_forced_logits


@dataclass
class Outputs:
    """What one engine produced on the inputs (kept for fp32, compared for the variants)."""

    towers: dict[str, np.ndarray] = field(default_factory=dict)
    logits: np.ndarray | None = None  # (predicted tokens, vocab): rows in the order of Inputs.targets
    answers: list[list[int]] = field(default_factory=list)


def run_engine(pipe, inputs: Inputs, settings: AccuracySettings, label: str, say: Progress) -> Outputs:
    out = Outputs()
    for stage, feeds in inputs.towers.items():
        runner = pipe.runner(stage)
        out.towers[stage] = np.concatenate([runner.run(f, ["tokens"])["tokens"] for f in feeds])
        say(f"{label}: {stage} run on {inputs.described[stage]}")
    if inputs.windows:
        out.logits = np.concatenate(
            [
                teacher_forced_logits(pipe, w, f"{label} window {k + 1}/{len(inputs.windows)}", say)
                for k, w in enumerate(inputs.windows)
            ]
        )
        out.answers = greedy_answers(pipe, settings, label, say)
    return out


def greedy_answers(pipe, settings: AccuracySettings, label: str, say: Progress) -> list[list[int]]:
    from vinci_edge.generation import GenerationConfig

    gen = GenerationConfig(max_new_tokens=settings.answer_tokens, ignore_eos=True)
    answers = []
    for k, p in enumerate(_usable_prompts(pipe, settings)):
        media = _media_of(p, settings)
        ans = pipe.ask(p.question, gen, **media)
        answers.append(list(ans.token_ids))
        say(f"{label}: answer {k + 1} ({p.media}) {len(ans.token_ids)} tokens")
    return answers


def _usable_prompts(pipe, settings: AccuracySettings) -> list[Prompt]:
    """Prompts whose media file is there and whose stage the engine has (the same for every variant,
    since variants have the fp32 engine's stages)."""
    stages = pipe.engine.stages

    def usable(p: Prompt) -> bool:
        if p.media == "text":
            return True
        if getattr(settings, p.media) is None:
            return False
        if p.media == st.AUDIO:
            return st.AUDIO in stages and pipe.cfg.has_sound
        return st.VISION in stages  # video, image

    return [p for p in settings.prompts if usable(p)]


def _media_of(p: Prompt, settings: AccuracySettings) -> dict[str, Any]:
    if p.media == "text":
        return {}
    media: dict[str, Any] = {p.media: getattr(settings, p.media)}
    if p.media == "video" and settings.num_frames:
        media["num_frames"] = settings.num_frames
    return media
