"""Clips made in memory -> training tensors, through the runtime's own prompt builder and plan.

Every question of every clip is laid out by `PromptBuilder.from_media`, exactly as a question about
a file is at inference: the chat template, the placeholders, TEG, the CRTE coordinates. The clips of
a step all last the same time, so their prompts share one media prefix (the chat head, the media,
the TEG separators) and differ only in the tail (the question and the assistant's cue); the prefix
is checked to be the same and is run once per clip.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from vinci_edge import metrics as m
from vinci_edge.avtask.dataset import Example, example
from vinci_edge.avtask.questions import CATEGORIES, Question
from vinci_edge.avtask.scene import COLOURS, PITCHES, SHAPES, WORDS, Scene
from vinci_edge.avtask.speech import WordBank
from vinci_edge.config import OmniVinciConfig
from vinci_edge.kinds import Kind
from vinci_edge.plan import Plan
from vinci_edge.request.chunks import AudioChunk, TextChunk, VideoChunk, encoded_chunks
from vinci_edge.request.modality import Context
from vinci_edge.request.prompt import Prompt, PromptBuilder
from vinci_edge.request.video import video_chunk
from vinci_edge.timeline import VideoTimeline, sample_frame_indices
from vinci_edge.tokens import IM_END


@dataclass(frozen=True)
class Prefix:
    """The shared media prefix of a step's prompts: positions [0, P) of the plan."""

    kind: np.ndarray
    src: np.ndarray
    scale: np.ndarray
    a: np.ndarray
    b: np.ndarray
    audio_rows: int  # audio rows of real samples (the rest cover the window's zero padding)

    def __len__(self) -> int:
        return int(self.kind.size)

    @classmethod
    def of(cls, plan: Plan, length: int, audio_rows: int) -> Prefix:
        cut = slice(0, length)
        return cls(plan.kind[cut], plan.src[cut], plan.scale[cut], plan.a[cut], plan.b[cut], audio_rows)

    def same_as(self, other: Prefix) -> bool:
        return all(
            np.array_equal(getattr(self, f), getattr(other, f)) for f in ("kind", "src", "scale", "a", "b")
        )


@dataclass
class Batch:
    pixels: torch.Tensor  # (clips * frames, 3, s, s)
    mel: torch.Tensor  # (clips, n_mels, 3000)
    prefix: Prefix
    tails: torch.Tensor  # (clips * questions, T) token ids, right-padded
    target_index: torch.Tensor  # (N,) flat positions in (clips * questions, T) that predict a target
    target_ids: torch.Tensor  # (N,)
    questions: list[Question]
    answer_spans: list[tuple[int, int]]  # per question, its targets in target_ids [lo, hi)
    video_labels: torch.Tensor  # (clips, frames, len(VIDEO_LABELS)) what each sampled frame shows
    audio_labels: torch.Tensor  # (clips, seconds) the sound class of each second (SOUND_CLASSES)

    @property
    def clips(self) -> int:
        return int(self.mel.shape[0])


class BatchMaker:
    """Makes the batch of a step from its seeds; one per training run (it caches spoken words)."""

    def __init__(self, cfg: OmniVinciConfig, builder: PromptBuilder, questions_per_clip: int) -> None:
        self.cfg = cfg
        self.builder = builder
        self.k = questions_per_clip
        self.words = WordBank()
        self.eos = builder.tokenizer.token_id(IM_END)  # what ends an assistant turn

    def chunk(self, ex: Example) -> VideoChunk:
        """The clip as the video chunk a file of it would give (frames sampled the official way)."""
        scene = ex.scene
        indices = sample_frame_indices(ex.frames.shape[0], self.cfg.num_video_frames)
        vt = VideoTimeline(indices, float(scene.fps), int(ex.frames.shape[0]), int(indices.size))
        ctx = Context("train", None)
        return video_chunk(
            ex.frames[indices],
            vt,
            ex.samples,
            self.cfg,
            f"seed {scene.seed}",
            str(scene.seed),
            ctx,
            m.Metrics(),
        )

    def prompt(self, chunk: VideoChunk, question: str) -> Prompt:
        return self.builder.from_media(question, media_of(chunk, self.cfg))

    def make(self, seeds: list[int], rng: np.random.Generator) -> Batch:
        pixels, mels, tails, questions, labels = [], [], [], [], []
        prefix: Prefix | None = None
        for seed in seeds:
            ex = example(seed, self.words)
            chunk = self.chunk(ex)
            labels.append(probe_labels(ex.scene, chunk.timeline.frame_times))
            pixels.append(chunk.pixels)
            audio = [c for c in encoded_chunks(media_of(chunk, self.cfg)) if isinstance(c, AudioChunk)]
            mels.append(audio[0].mel)
            for q in pick_questions(ex.questions, self.k, rng):
                prompt = self.prompt(chunk, q.question)
                tail = prompt.chunks[-1]
                assert isinstance(tail, TextChunk)
                real = replace(audio[0].timeline, trimmed=True).n_tokens
                p = Prefix.of(prompt.plan, len(prompt.plan) - len(tail.ids), real)
                if prefix is None:
                    prefix = p
                elif not prefix.same_as(p):
                    raise ValueError("the clips of a step must share their media prefix (same length)")
                answer = self.builder.tokenizer.encode(q.answer) + [self.eos]
                tails.append((list(tail.ids), answer))
                questions.append(q)
        assert prefix is not None
        return _collate(pixels, mels, prefix, tails, questions, labels)


VIDEO_LABELS = (*COLOURS, *SHAPES)
SOUND_CLASSES = (
    "none",
    *(f"beeps {n}" for n in (1, 2, 3)),
    *(f"tone {p}" for p in PITCHES),
    "alarm",
    *(f"word {w}" for w in WORDS),
)


def probe_labels(scene: Scene, frame_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the media probe is taught (`loop.MediaProbe`): per sampled frame, the colours and shapes
    on screen; per second, the sound that starts in it."""
    video = np.zeros((frame_times.size, len(VIDEO_LABELS)), np.float32)
    for f, t in enumerate(frame_times):
        for shape in scene.shapes:
            if shape.start <= t < shape.end:
                video[f, VIDEO_LABELS.index(shape.colour)] = 1
                video[f, VIDEO_LABELS.index(shape.shape)] = 1
    audio = np.zeros(scene.duration, np.int64)
    for ev in scene.sounds:
        name = "alarm" if ev.kind == "alarm" else f"{ev.kind} {ev.detail}"
        audio[ev.second] = SOUND_CLASSES.index(name)
    return video, audio


def media_of(chunk: VideoChunk, cfg: OmniVinciConfig) -> list:
    """The media chunks of a clip in prompt order: the video with its track nested (TEG), or the
    track and then the video (the official non-interleaved layout)."""
    if cfg.interleaved_vis_aud_in_video or chunk.track is None:
        return [chunk]
    return [chunk.track, replace(chunk, track=None)]


def pick_questions(questions: list[Question], k: int, rng: np.random.Generator) -> list[Question]:
    """k questions, each from a category drawn uniformly among those the clip has (so the rarer
    audio-visual questions are trained on as often as the others), without repeats where possible."""
    by_cat = {c: [q for q in questions if q.category == c] for c in CATEGORIES}
    by_cat = {c: qs for c, qs in by_cat.items() if qs}
    cats = list(by_cat)
    picked: list[Question] = []
    for _ in range(k):
        pool = by_cat[cats[int(rng.integers(len(cats)))]]
        fresh = [q for q in pool if q not in picked] or pool
        picked.append(fresh[int(rng.integers(len(fresh)))])
    return picked


def _collate(
    pixels: list[np.ndarray],
    mels: list[np.ndarray],
    prefix: Prefix,
    tails: list[tuple[list[int], list[int]]],
    questions: list[Question],
    labels: list[tuple[np.ndarray, np.ndarray]],
) -> Batch:
    width = max(len(q) + len(a) for q, a in tails)
    ids = np.zeros((len(tails), width), np.int64)
    index, targets, spans = [], [], []
    for row, (q, a) in enumerate(tails):
        seq = q + a
        ids[row, : len(seq)] = seq
        lo = len(targets)
        for j, tok in enumerate(a):
            index.append(row * width + len(q) - 1 + j)  # the position whose output predicts tok
            targets.append(tok)
        spans.append((lo, len(targets)))
    return Batch(
        pixels=torch.from_numpy(np.concatenate(pixels)),
        mel=torch.from_numpy(np.concatenate(mels)),
        prefix=prefix,
        tails=torch.from_numpy(ids),
        target_index=torch.tensor(index),
        target_ids=torch.tensor(targets),
        questions=questions,
        answer_spans=spans,
        video_labels=torch.from_numpy(np.stack([v for v, _ in labels])),
        audio_labels=torch.from_numpy(np.stack([a for _, a in labels])),
    )


def text_positions(prefix: Prefix) -> np.ndarray:
    return np.flatnonzero(prefix.kind == Kind.TEXT)
