"""`vinci-edge profile`: per-stage latency, memory, sizes and the decode bound of engine folders.

    vinci-edge profile --engine engine/smol --video clip.mp4 --runs 5 --out prof/
    vinci-edge profile --engine engine/smol --video clip.mp4 --compare engine/smol-fp16 engine/smol@cuda

Writes profile.json (docs/profile-schema.md), profile.md, profile.html and trace.json into --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vinci_edge import cli_options as opt
from vinci_edge.errors import MediaError, PromptError
from vinci_edge.output_folder import check_writable_dir
from vinci_edge.progress import to_stderr_as

DEFAULT_PROMPT = "Describe what happens in this clip."


_say = to_stderr_as("profile")


def _targets(args: argparse.Namespace):
    """The engine and every --compare folder as targets; DIR@PROVIDER runs DIR on another provider."""
    from vinci_edge.profiling.profiler import EngineTarget

    stage_providers = {} if args.stage_provider is None else args.stage_provider
    specs = [(str(args.engine), args.provider)]
    for folder, provider in [] if args.compare is None else args.compare:
        specs.append((folder, args.provider if provider is None else provider))
    targets, seen = [], set()
    for folder, provider in specs:
        base = Path(folder).name + ("" if provider == args.provider else f"@{provider}")
        label, k = base, 2
        while label in seen:  # the same folder twice (e.g. to see run-to-run noise) gets #2, #3, ...
            label, k = f"{base} #{k}", k + 1
        seen.add(label)
        targets.append(EngineTarget(folder, label, provider, stage_providers, args.threads))
    return targets


def _check_inputs(args: argparse.Namespace, targets) -> None:
    """Fail before any engine is loaded: missing engines, media, or providers."""
    from vinci_edge.runtime.backend import resolve_provider
    from vinci_edge.runtime.engine import Engine

    if not (args.video or args.audio or args.image):
        raise PromptError("profile needs a request with media", hint="give --video, --audio or --image")
    for flag in ("video", "audio", "image"):
        path = getattr(args, flag)
        if path is not None and not Path(path).is_file():
            raise MediaError(
                f"--{flag} {path}: file not found", hint="check the path and that the file exists"
            )
    for t in targets:
        Engine.load(t.folder)
        for provider in {t.provider, *t.stage_providers.values()}:
            resolve_provider(provider)


def _headline(e: dict) -> str:
    r, b = e["requests"], e["bound"]
    line = (
        f"{e['label']} (p50): first token {r['time_to_first_token_s'].get('p50', 0):.3f} s, "
        f"end to end {r['end_to_end_s']['p50']:.3f} s"
    )
    tps = r["decode_tokens_per_second"].get("p50")
    if tps:
        line += f", decode {tps:.1f} tok/s"
    if b["percent_of_bound"] is not None:
        line += f" ({b['percent_of_bound']:.0f}% of the {b['bound_tokens_per_second']:.0f} tok/s bound)"
    return line


def cmd_profile(args: argparse.Namespace) -> int:
    from vinci_edge.profiling.collect import profile
    from vinci_edge.profiling.outputs import write_outputs
    from vinci_edge.profiling.profiler import RequestSpec

    targets = _targets(args)
    _check_inputs(args, targets)
    check_writable_dir(args.out)  # now, not after the measuring
    req = RequestSpec(
        prompt=args.prompt,
        video=None if args.video is None else str(args.video),
        audio=None if args.audio is None else str(args.audio),
        image=None if args.image is None else str(args.image),
        num_frames=args.num_frames,
        max_new_tokens=args.max_new_tokens,
        runs=args.runs,
        warmup=args.warmup,
        stop_at_eos=args.stop_at_eos,
    )
    result = profile(targets, req, isolate=not args.in_process, say=_say)
    paths = write_outputs(result, args.out)
    for e in result["engines"]:
        print(_headline(e))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "profile", help="per-stage latency, memory, sizes and decode bound of one or more engines"
    )
    p.add_argument("--engine", required=True, type=Path, help="engine folder (the baseline of --compare)")
    p.add_argument("--video", type=Path, help="video file; its audio track is used too (default: none)")
    p.add_argument("--audio", type=Path, help="audio file (default: none)")
    p.add_argument("--image", type=Path, help="image file (default: none)")
    opt.add_prompt_options(p, default=DEFAULT_PROMPT)
    p.add_argument(
        "--num-frames", type=opt.frame_count, default=None, help="video frames (default: the model's)"
    )
    p.add_argument(
        "--max-new-tokens", type=opt.positive_int, default=32, help="tokens per answer (default 32)"
    )
    p.add_argument("--runs", type=opt.positive_int, default=5, help="measured runs (default 5)")
    p.add_argument("--warmup", type=opt.non_negative_int, default=1, help="runs before measuring (default 1)")
    p.add_argument(
        "--stop-at-eos",
        action="store_true",
        help="stop at the end-of-sequence token (default: decode exactly --max-new-tokens)",
    )
    p.add_argument("--out", type=Path, default=Path("profile"), help="output folder (default ./profile)")
    p.add_argument(
        "--compare",
        type=opt.engine_at_provider,
        nargs="+",
        metavar="DIR[@PROVIDER]",
        help="more engine folders to profile with the same request, as ratios to --engine (default: none)",
    )
    opt.add_provider_options(p)
    p.add_argument(
        "--threads", type=opt.thread_count, default=0, help="CPU threads per stage (default 0: one per core)"
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="profile in this process, not one process per engine (peak RSS may then include memory "
        "this process held already)",
    )
    p.set_defaults(func=cmd_profile)
