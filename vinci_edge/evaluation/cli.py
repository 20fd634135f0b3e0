"""`vinci-edge task-split` and `vinci-edge task-eval`: the synthetic task's held-out set, and its
accuracy through the PyTorch reference and any number of engines.

    vinci-edge task-split --out work/task-test --clips 250
    vinci-edge task-eval --split work/task-test --checkpoint checkpoints/avtask \\
        --engine fp32=engines/avtask --engine int8=engines/avtask-int8 --out reports/task
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vinci_edge import cli_options as opt
from vinci_edge.errors import ConfigError
from vinci_edge.host import cpu_name
from vinci_edge.output_folder import check_writable_dir, output_folder
from vinci_edge.progress import to_stderr_as

DEFAULT_CLIPS = 250  # about 3,500 questions, 1,000+ in every category but one


def named_folder(text: str) -> tuple[str, Path]:
    """`type=` for NAME=FOLDER (an engine folder given a name in the report)."""
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=FOLDER (e.g. int8=engines/avtask-int8)")
    path = Path(folder)
    if not (path / "manifest.json").is_file():
        raise argparse.ArgumentTypeError(f"{folder} is not an engine folder (it has no manifest.json)")
    return name, path


def split_folder(text: str) -> Path:
    from vinci_edge.avtask.dataset import is_split_folder

    path = Path(text)
    if not is_split_folder(path):
        raise argparse.ArgumentTypeError(f"{text} is not a task split (make one with vinci-edge task-split)")
    return path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("task-split", help="write the synthetic task's held-out clips and questions")
    p.add_argument("--out", required=True, type=Path, help="folder to write")
    p.add_argument(
        "--clips",
        type=opt.IntRange(1, 100_000),
        default=DEFAULT_CLIPS,
        help=f"clips, from the first held-out seed on (default {DEFAULT_CLIPS})",
    )
    p.add_argument(
        "--start",
        type=opt.IntRange(0, 99_999),
        default=0,
        help="index of the first held-out clip (default 0: the test set's first)",
    )
    p.add_argument("--force", action="store_true", help="replace a split folder made before")
    p.set_defaults(func=cmd_task_split)

    p = sub.add_parser(
        "task-eval", help="accuracy on the task's held-out questions, per category, per model or engine"
    )
    p.add_argument("--split", required=True, type=split_folder, help="a folder task-split wrote")
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="also answer with the PyTorch reference of this checkpoint (default: no reference run)",
    )
    p.add_argument(
        "--engine",
        action="append",
        type=named_folder,
        default=[],
        metavar="NAME=FOLDER",
        help="an engine to answer with, named in the report (repeatable; default: none, then "
        "--checkpoint is needed)",
    )
    p.add_argument(
        "--baseline", default=None, help="the run others are compared with (default: fp32 if named so)"
    )
    p.add_argument(
        "--clips", type=opt.positive_int, default=None, help="only the first N clips (default all)"
    )
    p.add_argument(
        "--threads", type=opt.thread_count, default=0, help="CPU threads per stage (default 0: one per core)"
    )
    p.add_argument("--out", required=True, type=Path, help="folder for task_accuracy.json / .md / .svg")
    p.add_argument(
        "--show", action="store_true", help="print every question with the answer and the ground truth"
    )
    p.set_defaults(func=cmd_task_eval)


def cmd_task_split(args: argparse.Namespace) -> int:
    from vinci_edge.avtask.dataset import HELD_OUT_SEEDS, SPLIT, held_out_seeds, write_split

    say = to_stderr_as("task-split")
    if args.start + args.clips > len(HELD_OUT_SEEDS):
        raise ConfigError(
            f"--start {args.start} --clips {args.clips} runs past the {len(HELD_OUT_SEEDS)} held-out clips",
            hint="lower --start or --clips",
        )
    with output_folder(args.out, kind=SPLIT, force=args.force, progress=say) as folder:
        info = write_split(folder, held_out_seeds(args.clips, args.start), progress=say)
    say(f"wrote {info['clips']} clips and {info['questions']} questions into {args.out}")
    return 0


def cmd_task_eval(args: argparse.Namespace) -> int:
    from vinci_edge.evaluation.answerers import EngineAnswerer, ReferenceAnswerer
    from vinci_edge.evaluation.report import write_task_report
    from vinci_edge.evaluation.task_eval import accuracy, agreement, evaluate

    say = to_stderr_as("task-eval")
    names = [n for n, _ in args.engine] + (["reference"] if args.checkpoint else [])
    if not names:
        raise ConfigError("nothing to evaluate", hint="give --checkpoint and/or --engine NAME=FOLDER")
    if len(set(names)) != len(names):
        raise ConfigError(f"run names repeat: {', '.join(names)}", hint="give each --engine its own NAME")
    baseline = args.baseline or ("fp32" if "fp32" in names else None)
    if baseline is not None and baseline not in names:
        raise ConfigError(f"--baseline {baseline} is not one of the runs ({', '.join(names)})")
    check_writable_dir(args.out)

    makers = [(n, lambda f=f, n=n: EngineAnswerer(n, f, args.threads)) for n, f in args.engine]
    if args.checkpoint:
        makers.append(("reference", lambda: ReferenceAnswerer("reference", args.checkpoint)))
    runs, scored = [], {}
    for name, make in makers:
        start = time.perf_counter()
        answerer = make()
        scored[name] = evaluate(args.split, answerer, args.clips, say)
        if args.show:
            for s in scored[name]:
                mark = "right" if s.right else "WRONG"
                print(f"{name}  {mark:5s}  {s.question}  ->  {s.said.strip()!r}  (truth: {s.truth})")
        acc = accuracy(scored[name])
        runs.append({"name": name, "accuracy": acc, "seconds": round(time.perf_counter() - start, 1)})
        say(f"{name}: {100 * acc['overall']['accuracy']:.1f}% of {acc['overall']['n']} right")
    report = {
        "split": _split_info(args.split, args.clips, scored[names[0]]),
        "machine": _machine(),
        "runs": runs,
        "baseline": baseline,
        "agreement": {n: agreement(scored[n], scored[baseline]) for n in names if baseline and n != baseline},
        "goals": {
            "fp32": ">= 90% overall, >= 80% av_temporal",
            "int8-dynamic / int8 / fp8": "within 1 point of fp32",
            "int4": "within 2 points of fp32",
        },
        "answers": {n: [s.to_dict() for s in v] for n, v in scored.items()},
    }
    for path in write_task_report(report, args.out):
        say(f"wrote {path}")
    return 0


def _machine() -> dict:
    """Where the engines answered: int8-compute's answers depend on whether this CPU's integer GEMM
    is exact (runtime/integer_gemm.py: where it is not, its prefill runs on the decode graph)."""
    from vinci_edge.runtime.integer_gemm import FULL_LEVELS, check_integer_gemm

    reduced, full = check_integer_gemm(63), check_integer_gemm(FULL_LEVELS)
    return {
        "cpu": cpu_name(),
        "onnxruntime": reduced.onnxruntime,
        "integer_gemm_exact": {"reduced": reduced.exact, "full": full.exact},
    }


def _split_info(split: Path, clips: int | None, scored: list) -> dict:
    import json

    info = json.loads((split / "split.json").read_text(encoding="utf-8"))
    if clips is not None:
        info = {**info, "clips": len({s.clip for s in scored}), "questions": len(scored)}
    return info
