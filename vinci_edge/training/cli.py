"""`vinci-edge train`: train the small OmniVinci on the synthetic audio-visual task from its seed."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vinci_edge import cli_options as opt
from vinci_edge.progress import to_stderr
from vinci_edge.training.recipe import ABLATIONS, QUESTION_SAMPLING, Recipe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the small OmniVinci on the synthetic audio-visual task (writes a checkpoint)",
        description=__doc__.splitlines()[0],
    )
    defaults = Recipe()
    p.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    p.add_argument(
        "--steps",
        type=opt.positive_int,
        default=defaults.steps,
        help=f"joint steps (the whole model on the questions), after --tower-steps "
        f"(default {defaults.steps})",
    )
    p.add_argument("--seed", type=opt.seed, default=0, help="initialisation and data seed (default 0)")
    p.add_argument(
        "--ablation",
        choices=ABLATIONS,
        default="none",
        help="take one of the paper's ideas out: no-align (OmniAlignNet loss), no-teg (time "
        "interleaving), no-crte (time rotation) (default none)",
    )
    p.add_argument(
        "--probe",
        choices=("pooled", "dense"),
        default="dense" if defaults.dense_probe else "pooled",
        help="the media probe's heads: pooled (per frame and per second) or dense (also per video "
        "and audio row) (default %(default)s)",
    )
    p.add_argument(
        "--tower-steps",
        type=opt.non_negative_int,
        default=defaults.tower_steps,
        metavar="N",
        help="steps that train the towers alone on the media probe before the joint steps "
        f"(default {defaults.tower_steps})",
    )
    p.add_argument(
        "--question-sampling",
        choices=QUESTION_SAMPLING,
        default=defaults.question_sampling,
        help="by-error: each clip's questions drawn from its templates in proportion to the "
        "template's running training error; by-category: from a category drawn uniformly "
        "(default %(default)s)",
    )
    p.add_argument(
        "--threads", type=opt.thread_count, default=0, help="torch threads (default 0: one per core)"
    )
    p.add_argument(
        "--stop-at",
        type=opt.positive_int,
        default=None,
        metavar="STEP",
        help="write the checkpoint at this step of the schedule and keep the run's state "
        "(--resume --force continues it) (default: train to --steps)",
    )
    p.add_argument("--resume", action="store_true", help="continue the interrupted run of this --out")
    p.add_argument("--force", action="store_true", help="replace an existing checkpoint folder")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from vinci_edge.training.run import train_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = Recipe(
        steps=args.steps,
        seed=args.seed,
        ablation=args.ablation,
        dense_probe=args.probe == "dense",
        tower_steps=args.tower_steps,
        question_sampling=args.question_sampling,
    )
    out = train_checkpoint(
        args.out, recipe, force=args.force, resume=args.resume, progress=to_stderr, stop_at=args.stop_at
    )
    to_stderr(f"wrote {out} (its training record: {out / 'training_record.json'})")
    return 0
