"""Clips made in memory -> training tensors, through the runtime's own prompt builder and plan.

Every question of every clip is laid out by `PromptBuilder.from_media`, exactly as a question about
a file is at inference: the chat template, the placeholders, TEG, the CRTE coordinates. The clips of
a step all last the same time, so their prompts share one media prefix (the chat head, the media,
the TEG separators) and differ only in the tail (the question and the assistant's cue); the prefix
is checked to be the same and is run once per clip.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch

from vinci_edge import metrics as m
from vinci_edge.avtask.dataset import Example, example
from vinci_edge.avtask.questions import Question
from vinci_edge.avtask.render import event_span, shape_map
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
from vinci_edge.training.curriculum import pick_questions


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
    prefix: Prefix | None  # None in a media-only batch (the towers' phase: no questions)
    tails: torch.Tensor  # (clips * questions, T) token ids, right-padded
    target_index: torch.Tensor  # (N,) flat positions in (clips * questions, T) that predict a target
    target_ids: torch.Tensor  # (N,)
    questions: list[Question]
    answer_spans: list[tuple[int, int]]  # per question, its targets in target_ids [lo, hi)
    video_labels: torch.Tensor  # (clips, frames, len(VIDEO_LABELS)) what each sampled frame shows
    audio_labels: torch.Tensor  # (clips, seconds) the sound class of each second (SOUND_CLASSES)
    cell_labels: torch.Tensor  # (clips, frames, cells, 2) colour and shape in each token's cell
    row_labels: torch.Tensor  # (clips, audio_rows) the sound class heard at each audio row

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
        self.grid = int(round(cfg.tokens_per_frame**0.5))  # token cells a side of a frame

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

    def make(
        self,
        seeds: list[int],
        rng: np.random.Generator,
        questions: bool = True,
        weights: Mapping[str, float] | None = None,
    ) -> Batch:
        """The step's batch; `questions=False`: the media and the probe's labels only. `weights`:
        per template, how often its questions are drawn (`curriculum.pick_questions`)."""
        pixels, mels, tails, asked, labels = [], [], [], [], []
        prefix: Prefix | None = None
        for seed in seeds:
            ex = example(seed, self.words)
            chunk = self.chunk(ex)
            pixels.append(chunk.pixels)
            audio = [c for c in encoded_chunks(media_of(chunk, self.cfg)) if isinstance(c, AudioChunk)]
            mels.append(audio[0].mel)
            real = replace(audio[0].timeline, trimmed=True).n_tokens
            labels.append(probe_labels(ex.scene, chunk.timeline.frame_times, self.words, self.grid, real))
            for q in pick_questions(ex.questions, self.k if questions else 0, rng, weights):
                prompt = self.prompt(chunk, q.question)
                tail = prompt.chunks[-1]
                assert isinstance(tail, TextChunk)
                p = Prefix.of(prompt.plan, len(prompt.plan) - len(tail.ids), real)
                if prefix is None:
                    prefix = p
                elif not prefix.same_as(p):
                    raise ValueError("the clips of a step must share their media prefix (same length)")
                answer = self.builder.tokenizer.encode(q.answer) + [self.eos]
                tails.append((list(tail.ids), answer))
                asked.append(q)
        assert prefix is not None or not questions
        return _collate(pixels, mels, prefix, tails, asked, labels)


VIDEO_LABELS = (*COLOURS, *SHAPES)
SOUND_CLASSES = (
    "none",
    *(f"beeps {n}" for n in (1, 2, 3)),
    *(f"tone {p}" for p in PITCHES),
    "alarm",
    *(f"word {w}" for w in WORDS),
)


@dataclass(frozen=True)
class ProbeLabels:
    """What the media probe is taught (`loop.MediaProbe`) about one clip."""

    frames: np.ndarray  # (frames, len(VIDEO_LABELS)) float: colours and shapes on screen per sampled frame
    seconds: np.ndarray  # (seconds,) int: the sound that starts in each second (SOUND_CLASSES)
    cells: np.ndarray  # (frames, grid * grid, 2) int: per token's cell, 1 + colour and 1 + shape (0: none)
    rows: np.ndarray  # (audio_rows,) int: the sound heard at the centre of each audio row


CELL_COVER = 0.1  # a cell is labelled with a shape that covers at least this fraction of it


def probe_labels(
    scene: Scene, frame_times: np.ndarray, words: WordBank, grid: int, audio_rows: int
) -> ProbeLabels:
    """Per sampled frame, the colours and shapes on screen, and per cell of its grid x grid token
    grid (row-major, as the projector's 2x2 fold orders them) the shape that covers most of it; per
    second, the sound that starts in it, and per audio row, the sound heard at its centre."""
    frames = np.zeros((frame_times.size, len(VIDEO_LABELS)), np.float32)
    cells = np.zeros((frame_times.size, grid * grid, 2), np.int64)
    side = scene.size // grid
    for f, t in enumerate(frame_times):
        ids = shape_map(scene, float(t))
        for shape in scene.shapes:
            if shape.start <= t < shape.end:
                frames[f, VIDEO_LABELS.index(shape.colour)] = 1
                frames[f, VIDEO_LABELS.index(shape.shape)] = 1
        per_cell = ids.reshape(grid, side, grid, side).transpose(0, 2, 1, 3).reshape(grid * grid, -1)
        for c, pixels in enumerate(per_cell):
            counts = np.bincount(pixels[pixels >= 0], minlength=len(scene.shapes))
            if counts.size and counts.max() >= CELL_COVER * pixels.size:
                shape = scene.shapes[int(counts.argmax())]
                cells[f, c] = 1 + list(COLOURS).index(shape.colour), 1 + SHAPES.index(shape.shape)
    seconds = np.zeros(scene.duration, np.int64)
    rows = np.zeros(audio_rows, np.int64)
    centres = (np.arange(audio_rows) + 0.5) * scene.duration / audio_rows
    for ev in scene.sounds:
        name = "alarm" if ev.kind == "alarm" else f"{ev.kind} {ev.detail}"
        seconds[ev.second] = SOUND_CLASSES.index(name)
        span = event_span(scene, ev.kind, words)
        assert span is not None
        rows[(centres >= span[0]) & (centres < span[1])] = SOUND_CLASSES.index(name)
    return ProbeLabels(frames, seconds, cells, rows)


def media_of(chunk: VideoChunk, cfg: OmniVinciConfig) -> list:
    """The media chunks of a clip in prompt order: the video with its track nested (TEG), or the
    track and then the video (the official non-interleaved layout)."""
    if cfg.interleaved_vis_aud_in_video or chunk.track is None:
        return [chunk]
    return [chunk.track, replace(chunk, track=None)]


def _collate(
    pixels: list[np.ndarray],
    mels: list[np.ndarray],
    prefix: Prefix | None,
    tails: list[tuple[list[int], list[int]]],
    questions: list[Question],
    labels: list[ProbeLabels],
) -> Batch:
    width = max((len(q) + len(a) for q, a in tails), default=0)
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
        target_index=torch.tensor(index, dtype=torch.int64),
        target_ids=torch.tensor(targets, dtype=torch.int64),
        questions=questions,
        answer_spans=spans,
        video_labels=torch.from_numpy(np.stack([x.frames for x in labels])),
        audio_labels=torch.from_numpy(np.stack([x.seconds for x in labels])),
        cell_labels=torch.from_numpy(np.stack([x.cells for x in labels])),
        row_labels=torch.from_numpy(np.stack([x.rows for x in labels])),
    )


def text_positions(prefix: Prefix) -> np.ndarray:
    return np.flatnonzero(prefix.kind == Kind.TEXT)
