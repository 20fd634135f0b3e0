"""Splits of the task: seeded scenes, their media, their questions.

A split is a range of seeds. The training split lives in memory (`example`: frames and samples,
never written); the held-out split is written as real media (`write_split`): each clip an MP4 (H.264
+ AAC, decoded again by the same FFmpeg path as any user's file), its questions in `questions.jsonl`,
its scene (the ground truth) in `scenes.jsonl`. Training seeds and held-out seeds never overlap.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vinci_edge.avtask.questions import Question, questions_for
from vinci_edge.avtask.render import render_audio, render_frames
from vinci_edge.avtask.scene import Scene, sample_scene
from vinci_edge.avtask.speech import WordBank
from vinci_edge.media.synth import write_clip
from vinci_edge.output_folder import FolderKind, OutputFolderError
from vinci_edge.progress import Progress, silent

GENERATOR_VERSION = 1
TRAIN_SEEDS = range(0, 1_000_000)
HELD_OUT_SEEDS = range(1_000_000, 1_100_000)  # the held-out test set draws from here only
SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class Example:
    """One clip in memory: its scene, frames (N, H, W, 3) uint8 at scene.fps, samples float32."""

    scene: Scene
    frames: np.ndarray
    samples: np.ndarray
    questions: list[Question]


def example(seed: int, words: WordBank) -> Example:
    scene = sample_scene(seed)
    return Example(scene, render_frames(scene), render_audio(scene, words), questions_for(scene))


def held_out_seeds(clips: int, start: int = 0) -> list[int]:
    """`clips` held-out seeds from the `start`-th on (the test set is the first 250)."""
    if clips < 1 or start < 0 or start + clips > len(HELD_OUT_SEEDS):
        raise ValueError(
            f"held-out clips {start}..{start + clips - 1} are not in 0..{len(HELD_OUT_SEEDS) - 1}"
        )
    return list(HELD_OUT_SEEDS[start : start + clips])


def write_split(
    folder: Path, seeds: list[int], words: WordBank | None = None, progress: Progress = silent
) -> dict[str, Any]:
    """Write the clips of `seeds` into `folder` (clips/SEED.mp4, questions.jsonl, scenes.jsonl,
    split.json); returns split.json's content."""
    words = words or WordBank()
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    n_questions = 0
    with (
        open(folder / "questions.jsonl", "w", encoding="utf-8") as qf,
        open(folder / "scenes.jsonl", "w", encoding="utf-8") as sf,
    ):
        for i, seed in enumerate(seeds):
            ex = example(seed, words)
            clip = f"clips/{seed}.mp4"
            size = (ex.scene.size, ex.scene.size)
            write_clip(folder / clip, ex.frames, ex.scene.fps, size, ex.samples, ex.scene.sample_rate)
            sf.write(json.dumps(ex.scene.to_dict()) + "\n")
            for q in ex.questions:
                qf.write(json.dumps({"clip": clip, "seed": seed, **q.to_dict()}) + "\n")
                n_questions += 1
            if (i + 1) % max(1, len(seeds) // 10) == 0 or i + 1 == len(seeds):
                progress(f"{i + 1}/{len(seeds)} clips")
    info = {
        "generator_version": GENERATOR_VERSION,
        "seeds": [seeds[0], seeds[-1] + 1] if seeds == list(range(seeds[0], seeds[-1] + 1)) else seeds,
        "clips": len(seeds),
        "questions": n_questions,
    }
    (folder / SPLIT_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


@dataclass(frozen=True)
class HeldOutQuestion:
    clip: Path
    seed: int
    question: Question


def read_split(folder: Path) -> Iterator[HeldOutQuestion]:
    """The questions of a written split, in file order."""
    with open(folder / "questions.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            q = Question(d["category"], d["template"], d["question"], d["answer"])
            yield HeldOutQuestion(folder / d["clip"], int(d["seed"]), q)


def is_split_folder(folder: Path) -> bool:
    """A folder `write_split` made: its split.json names the generator."""
    try:
        return "generator_version" in json.loads((folder / SPLIT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


SPLIT = FolderKind("a task split", is_split_folder, OutputFolderError)
