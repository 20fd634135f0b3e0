"""One training run, end to end: `train_checkpoint(out, recipe)` writes a checkpoint folder in the
real `nvidia/omnivinci` layout (tokenizer included) with its `training_record.json`.

The run's state (weights, optimizer, step) is saved beside the output as `OUT.train-state.pt` every
`save_every` steps; `resume=True` continues from it and gives the same result as an uninterrupted
run (a step's data and sampling depend only on the recipe's seed and the step number). The state
file is removed once the checkpoint is in place.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vinci_edge.avtask.questions import corpus
from vinci_edge.errors import ConfigError
from vinci_edge.model.omnivinci import OmniVinciModel
from vinci_edge.output_folder import CHECKPOINT, output_folder
from vinci_edge.progress import Progress, silent
from vinci_edge.request.prompt import PromptBuilder
from vinci_edge.text.tokenizer import TextTokenizer
from vinci_edge.text.train_tokenizer import write_trained_tokenizer
from vinci_edge.training.batch import BatchMaker
from vinci_edge.training.loop import Trainer, write_result
from vinci_edge.training.recipe import PRESET, Recipe, recipe_config

TOKENIZER_VOCAB = 512


def state_file_for(out: Path) -> Path:
    return out.with_name(out.name + ".train-state.pt")


def train_checkpoint(
    out: Path,
    recipe: Recipe,
    force: bool = False,
    resume: bool = False,
    progress: Progress = silent,
    save_every: int = 100,
    stop_at: int | None = None,
) -> Path:
    """`stop_at`: write the checkpoint of that step of the recipe's schedule and keep the state, so
    `resume` (with `force`) continues the same run later."""
    state = state_file_for(out)
    if state.exists() and not resume:
        raise ConfigError(
            f"{state} holds an interrupted run of this output",
            hint="add --resume to continue it, or remove the file to start again",
        )
    if resume and not state.exists():
        raise ConfigError(f"--resume: there is no saved run at {state}", hint="run without --resume")
    with output_folder(out, kind=CHECKPOINT, force=force, progress=progress) as folder:
        progress("training the task tokenizer")
        write_trained_tokenizer(folder / "llm", TOKENIZER_VOCAB, corpus=corpus())
        tokenizer = TextTokenizer.from_folder(folder / "llm")
        cfg = recipe_config(recipe, tokenizer.vocab_size)
        torch.manual_seed(recipe.seed)
        model = OmniVinciModel(cfg)
        # Same weights, same maths: the towers' fused attention is only faster to train with (the
        # export keeps the eager layout it traces best).
        model.vision_tower.vision_tower.config._attn_implementation = "sdpa"
        model.sound_tower.audio_tower.config._attn_implementation = "sdpa"
        maker = BatchMaker(cfg, PromptBuilder(cfg, tokenizer), recipe.questions_per_clip)
        trainer = Trainer(model, maker, recipe, state)
        if resume:
            trainer.load_state()
            progress(f"resuming at step {trainer.step} of {recipe.total_steps}")
        params = sum(p.numel() for p in model.parameters())
        towers = f"{recipe.tower_steps} steps of the towers alone, then " if recipe.tower_steps else ""
        progress(
            f"training the {PRESET} model ({params / 1e6:.2f} M parameters, ablation {recipe.ablation}) "
            f"for {towers}{recipe.steps} steps of {recipe.clips_per_step} clips x "
            f"{recipe.questions_per_clip} questions on {torch.get_num_threads()} threads"
        )
        trainer.train(progress, save_every, stop_at)
        model.vision_tower.vision_tower.config._attn_implementation = "eager"
        model.sound_tower.audio_tower.config._attn_implementation = "eager"
        stopped = {"stopped_at": trainer.step} if trainer.step < recipe.total_steps else {}
        write_result(trainer, folder, {"preset": PRESET, **stopped})
    if not stopped:
        state.unlink(missing_ok=True)
    return out
