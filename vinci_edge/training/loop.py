"""The training loop: the model forward on a batch, LM + OmniAlignNet losses, schedule, progress,
resume, and the finished checkpoint in the real layout with its training record.

Forward, per step (B clips, K questions each):
    frames (B*8) -> vision tower -> mm_projector -> video rows (B, 128, D)
    mel windows (B) -> sound tower -> sound projector -> audio rows (B, 750, D)
    prefix = TEG gather + CRTE of those rows and the chat head's text (the plan's arrays, batched)
    LLM on the prefix once per clip -> its KV cache, repeated K times -> LLM on the K tails
    LM loss on the answer tokens (and end of turn); OmniAlignNet loss on (video rows, audio rows)
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vinci_edge import crte
from vinci_edge.avtask.dataset import TRAIN_SEEDS
from vinci_edge.avtask.scene import COLOURS, SHAPES
from vinci_edge.host import cpu_name
from vinci_edge.kinds import Kind
from vinci_edge.model.align import OmniAlignNet
from vinci_edge.model.checkpoint import save_checkpoint
from vinci_edge.model.omnivinci import OmniVinciModel
from vinci_edge.progress import Progress, silent
from vinci_edge.training.batch import SOUND_CLASSES, VIDEO_LABELS, Batch, BatchMaker, Prefix
from vinci_edge.training.curriculum import TemplateErrors
from vinci_edge.training.curves import curves_svg
from vinci_edge.training.recipe import Recipe

RECORD_FILE = "training_record.json"
CURVES_FILE = "training_curves.svg"  # each template's training accuracy over the joint steps


class PrefixStitch(nn.Module):
    """TEG gather + CRTE of a step's shared prefix, for a batch of clips at once (float32)."""

    def __init__(self, prefix: Prefix, tables: dict[Kind, crte.RotationTable | None]) -> None:
        super().__init__()
        order, self.rot = [], {}
        for kind in (Kind.TEXT, Kind.VIDEO, Kind.AUDIO):
            pos = np.flatnonzero(prefix.kind == kind)
            order.append(pos)
            table = tables.get(kind)
            if kind != Kind.TEXT and table is not None and pos.size:
                ang = crte.rotation_angles(table, prefix.scale[pos], prefix.a[pos], prefix.b[pos])
                self.rot[kind] = (
                    torch.from_numpy(np.cos(ang)).float(),
                    torch.from_numpy(np.sin(ang)).float(),
                )
        self.src = {
            k: torch.from_numpy(prefix.src[pos]) for k, pos in zip((Kind.TEXT, Kind.VIDEO, Kind.AUDIO), order)
        }
        # concatenated (text, video, audio) -> prompt order
        self.inverse = torch.from_numpy(np.argsort(np.concatenate(order)))

    def forward(self, embed: nn.Embedding, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        b = video.shape[0]
        parts = [embed(self.src[Kind.TEXT])[None].expand(b, -1, -1)]
        for kind, rows in ((Kind.VIDEO, video), (Kind.AUDIO, audio)):
            x = rows[:, self.src[kind]]
            if kind in self.rot:
                x = _rotate(x, *self.rot[kind])
            parts.append(x)
        return torch.cat(parts, dim=1)[:, self.inverse]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """CRTE's rotation of the first cos.shape[1] channels in adjacent pairs (`crte.apply_rotation`)."""
    rot = cos.shape[1]
    head = x[..., :rot]
    pairs = head.reshape(*head.shape[:-1], -1, 2)
    half = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).reshape(head.shape)
    return torch.cat([head * cos + half * sin, x[..., rot:]], dim=-1)


class MediaProbe(nn.Module):
    """Training-only heads on the projected media rows (like OmniAlignNet, never exported): what each
    sampled frame shows (colours and shapes on screen, from the mean of its rows) and which sound
    starts in each second (from the mean of that second's audio rows); with `dense`, also each
    video row's cell (the colour and the shape covering it) and each audio row's sound.

    Why: trained end to end from scratch with the LM loss alone, the LLM learnt the answers' prior
    in ~100 steps and then ignored the media (the rows became one large constant vector; swapping
    clips left the loss unchanged to 1e-7; 30 % right at step 400 = the prior). Supervising the rows
    directly gives the towers content from the first step, which the LLM then learns to read. The
    pooled heads cannot teach which colour goes with which shape (a frame's mean holds both shapes'
    features); the dense heads teach each row what is at its place and time (docs/avtask.md)."""

    def __init__(self, dim: int, dense: bool = False) -> None:
        super().__init__()
        self.video = nn.Linear(dim, len(VIDEO_LABELS))
        self.audio = nn.Linear(dim, len(SOUND_CLASSES))
        self.dense = dense
        if dense:
            self.cell_colour = nn.Linear(dim, 1 + len(COLOURS))
            self.cell_shape = nn.Linear(dim, 1 + len(SHAPES))
            self.row_sound = nn.Linear(dim, len(SOUND_CLASSES))

    def loss(self, video: torch.Tensor, audio: torch.Tensor, batch: Batch) -> torch.Tensor:
        b, frames, _ = batch.video_labels.shape
        d = video.shape[-1]
        per_frame = video.reshape(b, frames, -1, d).mean(dim=2)
        seconds = batch.audio_labels.shape[1]
        heard = audio[:, : batch.row_labels.shape[1]]  # the rows of real samples
        per_second = heard.reshape(b, seconds, -1, d).mean(dim=2)
        v = F.binary_cross_entropy_with_logits(self.video(per_frame), batch.video_labels)
        a = F.cross_entropy(self.audio(per_second).reshape(b * seconds, -1), batch.audio_labels.reshape(-1))
        if not self.dense:
            return v + a
        rows = video.reshape(-1, d)
        cells = batch.cell_labels.reshape(-1, 2)
        colour = F.cross_entropy(self.cell_colour(rows), cells[:, 0])
        shape = F.cross_entropy(self.cell_shape(rows), cells[:, 1])
        sound = F.cross_entropy(self.row_sound(heard.reshape(-1, d)), batch.row_labels.reshape(-1))
        return v + a + colour + shape + sound


@dataclass
class StepResult:
    loss: float
    lm: float | None  # None in the towers' phase (no questions, no LLM)
    align: float | None
    probe: float
    answer_accuracy: float | None  # answers whose every token the model ranks first (teacher forcing)
    answers_right: list[bool] | None = None  # per question of the batch, as above


def tower_forward(model: OmniVinciModel, batch: Batch, probe: MediaProbe) -> tuple[torch.Tensor, StepResult]:
    """A step of the towers' phase: the media probe's loss alone, on the towers and projectors."""
    d = model.cfg.hidden_size
    video = model.encode_frames(batch.pixels).reshape(batch.clips, -1, d)
    audio = model.encode_audio(batch.mel).reshape(batch.clips, -1, d)
    loss = probe.loss(video, audio, batch)
    return loss, StepResult(loss.item(), None, None, loss.item(), None)


def forward(
    model: OmniVinciModel,
    align: OmniAlignNet | None,
    batch: Batch,
    recipe: Recipe,
    probe: MediaProbe | None = None,
) -> tuple[torch.Tensor, StepResult]:
    cfg = model.cfg
    b, k = batch.clips, recipe.questions_per_clip
    video = model.encode_frames(batch.pixels).reshape(b, -1, cfg.hidden_size)
    audio = model.encode_audio(batch.mel).reshape(b, -1, cfg.hidden_size)
    stitch = PrefixStitch(batch.prefix, model.tables)
    prefix = stitch(model.llm.get_input_embeddings(), video, audio)

    body = model.llm.model
    p = prefix.shape[1]
    cache = body(inputs_embeds=prefix, use_cache=True).past_key_values
    cache.batch_repeat_interleave(k)
    tails = model.llm.get_input_embeddings()(batch.tails)
    t = tails.shape[1]
    hidden = body(
        inputs_embeds=tails,
        past_key_values=cache,
        use_cache=True,
        cache_position=torch.arange(p, p + t),
        position_ids=torch.arange(p, p + t)[None].expand(b * k, -1),
    ).last_hidden_state
    picked = hidden.reshape(-1, hidden.shape[-1])[batch.target_index]
    logits = model.llm.lm_head(picked)
    lm = F.cross_entropy(logits, batch.target_ids)

    loss = lm
    align_loss = torch.zeros(())
    if align is not None:
        v, a = align(video, audio[:, : batch.prefix.audio_rows])
        align_loss = align.loss(v, a)
        loss = loss + recipe.align_weight * align_loss
    probe_loss = torch.zeros(())
    if probe is not None:
        probe_loss = probe.loss(video, audio, batch)
        loss = loss + recipe.probe_weight * probe_loss
    with torch.no_grad():
        right = (logits.argmax(-1) == batch.target_ids).tolist()
        whole = [all(right[lo:hi]) for lo, hi in batch.answer_spans]
    return loss, StepResult(
        loss.item(), lm.item(), align_loss.item(), probe_loss.item(), float(np.mean(whole)), whole
    )


def lr_at(step: int, recipe: Recipe) -> float:
    """The towers' phase: linear warm-up to the peak, then the peak. The joint phase (counting its
    own steps): linear warm-up, then cosine decay to `min_lr_fraction` of the peak."""
    if step < recipe.tower_steps:
        return recipe.lr * min(1.0, (step + 1) / recipe.warmup_steps)
    step -= recipe.tower_steps
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    u = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    floor = recipe.min_lr_fraction
    return recipe.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(u, 1.0))))


def step_seeds(step: int, recipe: Recipe) -> list[int]:
    """Fresh scenes every step (never a held-out seed); a run's data are a function of its seed."""
    base = (recipe.seed * 10_000_000 + step * recipe.clips_per_step) % len(TRAIN_SEEDS)
    return [TRAIN_SEEDS[(base + i) % len(TRAIN_SEEDS)] for i in range(recipe.clips_per_step)]


@dataclass
class History:
    every: int = 25
    points: list[dict[str, Any]] = field(default_factory=list)
    _acc: list[StepResult] = field(default_factory=list)

    def add(
        self, step: int, r: StepResult, seconds: float, phase_ends: bool = False
    ) -> dict[str, Any] | None:
        """A point every `every` steps and where a phase ends, averaging the steps since
        the last one (the towers' phase has no LM, alignment or answer figures)."""
        self._acc.append(r)
        if (step + 1) % self.every and not phase_ends:
            return None
        point: dict[str, Any] = {"step": step + 1, "phase": "towers" if r.lm is None else "joint"}
        for key in ("loss", "lm", "align", "probe", "answer_accuracy"):
            values = [getattr(x, key) for x in self._acc if getattr(x, key) is not None]
            if values:
                point[key] = float(np.mean(values))
        point["seconds"] = round(seconds, 1)
        self.points.append(point)
        self._acc = []
        return point


class Trainer:
    """Owns the model, the alignment head, the optimizer and the state file of one run."""

    def __init__(self, model: OmniVinciModel, maker: BatchMaker, recipe: Recipe, state_file: Path) -> None:
        self.model, self.maker, self.recipe, self.state_file = model, maker, recipe, state_file
        d = model.cfg.hidden_size
        self.align = (
            OmniAlignNet(d, heads=4, layers=recipe.align_layers, temperature=recipe.align_temperature)
            if recipe.uses_align
            else None
        )
        self.probe = MediaProbe(d, recipe.dense_probe) if recipe.probe_weight > 0 else None
        self.errors = TemplateErrors() if recipe.question_sampling == "by-error" else None
        params = list(model.parameters())
        for head in (self.align, self.probe):
            params += list(head.parameters()) if head is not None else []
        self.optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
        self.params = params
        self.step = 0
        self.history = History()
        self.seconds = 0.0

    def save_state(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        torch.save(
            {
                "recipe": self.recipe.to_dict(),
                "step": self.step,
                "model": self.model.state_dict(),
                "align": self.align.state_dict() if self.align else None,
                "probe": self.probe.state_dict() if self.probe else None,
                "optimizer": self.optimizer.state_dict(),
                "history": self.history.points,
                "seconds": self.seconds,
                "template_errors": self.errors.to_dict() if self.errors else None,
            },
            tmp,
        )
        os.replace(tmp, self.state_file)

    def load_state(self) -> None:
        state = torch.load(self.state_file, weights_only=False)
        if state["recipe"] != self.recipe.to_dict():
            raise ValueError(
                f"{self.state_file} was saved by another recipe; remove it or give the same options"
            )
        self.model.load_state_dict(state["model"])
        if self.align is not None:
            self.align.load_state_dict(state["align"])
        if self.probe is not None:
            self.probe.load_state_dict(state["probe"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.history.points = list(state["history"])
        self.seconds = float(state["seconds"])
        if self.errors is not None:
            self.errors = TemplateErrors(state["template_errors"])

    def train(self, progress: Progress = silent, save_every: int = 100, stop_at: int | None = None) -> None:
        """Train to the recipe's last step (the towers' phase, then the joint one), or stop (state
        saved) at `stop_at`."""
        recipe = self.recipe
        total = recipe.total_steps
        last = total if stop_at is None else min(stop_at, total)
        self.model.train()
        since = (self.step, self.seconds)  # where the rate in the progress lines is measured from
        while self.step < last:
            start = time.perf_counter()
            towers = self.step < recipe.tower_steps
            if self.step == recipe.tower_steps:
                since = (self.step, self.seconds)  # the joint phase runs at another rate
            rng = np.random.default_rng([recipe.seed, self.step])
            weights = self.errors.weights() if self.errors else None
            batch = self.maker.make(step_seeds(self.step, recipe), rng, not towers, weights)
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.step, recipe)
            if towers:
                assert self.probe is not None  # the recipe refuses a towers' phase without a probe
                loss, result = tower_forward(self.model, batch, self.probe)
            else:
                loss, result = forward(self.model, self.align, batch, recipe, self.probe)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, recipe.grad_clip)
            self.optimizer.step()
            if self.errors is not None and result.answers_right is not None:
                self.errors.update(batch.questions, result.answers_right)
            self.seconds += time.perf_counter() - start
            ends = self.step + 1 in (recipe.tower_steps, total)  # a phase's last step
            point = self.history.add(self.step, result, self.seconds, ends)
            if point and self.errors is not None and point["phase"] == "joint":
                # when each template is learnt (or forgotten): which questions a run gets right
                # differs from run to run (docs/avtask.md, "binding")
                point["template_errors"] = {t: round(e, 3) for t, e in self.errors.to_dict().items()}
            self.step += 1
            if point:
                progress(self._progress_line(point, since))
            if self.step < total and (self.step % save_every == 0 or self.step == last):
                self.save_state()
        self.model.eval()

    def _progress_line(self, point: dict[str, Any], since: tuple[int, float]) -> str:
        """The point's figures and the time left in its phase, at the phase's rate so far."""
        recipe = self.recipe
        rate = (self.seconds - since[1]) / max(1, self.step - since[0])
        if point["phase"] == "towers":
            left = rate * (recipe.tower_steps - self.step) / 60
            what = f"towers {self.step}/{recipe.tower_steps}  probe {point['probe']:.3f}"
            return f"{what}  {self.seconds:.0f} s, about {left:.1f} min left for the towers' phase"
        left = rate * (recipe.total_steps - self.step) / 60
        what = (
            f"step {self.step - recipe.tower_steps}/{recipe.steps}  loss {point['loss']:.3f} "
            f"(lm {point['lm']:.3f}, align {point['align']:.3f}, probe {point['probe']:.3f})  "
            f"answers right {point['answer_accuracy']:.0%}"
        )
        return f"{what}  {self.seconds:.0f} s, about {left:.1f} min left"


def write_result(trainer: Trainer, folder: Path, extra: dict[str, Any]) -> None:
    """The trained checkpoint (real layout; tokenizer written by the caller) and its record."""
    save_checkpoint(trainer.model, folder)
    record = {
        "recipe": trainer.recipe.to_dict(),
        "steps": trainer.step,
        "train_seconds": round(trainer.seconds, 1),
        "examples": max(0, trainer.step - trainer.recipe.tower_steps)
        * trainer.recipe.clips_per_step
        * trainer.recipe.questions_per_clip,  # questions answered (the towers' phase asks none)
        "history": trainer.history.points,
        **({"template_errors": trainer.errors.to_dict()} if trainer.errors else {}),
        "machine": machine(),
        "versions": {"torch": torch.__version__},
        **extra,
    }
    (folder / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    chart = curves_svg(record)
    if chart is not None:
        (folder / CURVES_FILE).write_text(chart, encoding="utf-8")


def machine() -> dict[str, Any]:
    return {"cpu": cpu_name(), "threads": torch.get_num_threads()}
