"""Answerers: a prompt built by the shared builder -> the greedy answer's text.

The reference (PyTorch, a checkpoint) and the runtime (ONNX Runtime, an engine folder, any precision)
sit behind the same two members, so the evaluation cannot treat them differently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from vinci_edge.generation import GenerationConfig
from vinci_edge.request.modality import Modality
from vinci_edge.request.prompt import Prompt, PromptBuilder

# Answers are one word or one number; a few tokens more let a wrong, longer answer show as wrong.
GREEDY = GenerationConfig(max_new_tokens=8)  # the default sampling is greedy


class Answerer(Protocol):
    name: str
    prompts: PromptBuilder

    def answer_text(self, prompt: Prompt) -> str: ...


class EngineAnswerer:
    """The torch-free runtime on an engine folder."""

    def __init__(self, name: str, engine: Path, threads: int = 0) -> None:
        from vinci_edge.runtime.pipeline import Pipeline

        self.name = name
        self.pipeline = Pipeline.from_engine(engine, threads=threads, cache_chunks=4)
        self.prompts = self.pipeline.prompts

    @property
    def modalities(self) -> dict:
        return self.prompts.modalities

    def answer_text(self, prompt: Prompt) -> str:
        return self.pipeline.answer(prompt, GREEDY).text


class ReferenceAnswerer:
    """The PyTorch reference on a checkpoint."""

    def __init__(self, name: str, checkpoint: Path) -> None:
        from vinci_edge.model.reference import Reference

        self.name = name
        self.reference = Reference.from_checkpoint(checkpoint)
        self.prompts = self.reference.prompts

    def answer_text(self, prompt: Prompt) -> str:
        return self.reference.answer_prompt(prompt, GREEDY).text


def modalities_of(answerer: Answerer) -> dict[object, Modality]:
    return answerer.prompts.modalities
