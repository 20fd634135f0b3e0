"""`vinci-edge` command line. Every subcommand turns vinci-edge errors into one clear message
(what is wrong, what to do) and exit status 2; nothing prints a raw traceback for user mistakes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from vinci_edge.errors import MissingDependencyError, VinciEdgeError


def _progress(msg: str) -> None:
    print(f"[vinci-edge] {msg}", file=sys.stderr, flush=True)


def _require_torch(command: str) -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"`vinci-edge {command}` needs the PyTorch reference ({exc.name} is not installed)",
            hint="pip install 'vinci-edge[export]' (and torch==2.13.0 first for the CPU build)",
        ) from exc


def _gen_config(args: argparse.Namespace):
    from vinci_edge.generation import GenerationConfig
    from vinci_edge.sampling import SamplingParams

    return GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        sampling=SamplingParams(
            temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed
        ),
        stop_strings=tuple(args.stop or ()),
    )


def _print_answer(answer, as_json: bool) -> None:
    if as_json:
        print(json.dumps(answer.to_json(), indent=None))
    else:
        print(flush=True)
        for w in answer.warnings:
            _progress(f"warning: {w}")


# ---- subcommands -----------------------------------------------------------------------------------
def cmd_init_checkpoint(args: argparse.Namespace) -> int:
    if args.config_only:
        return _init_config_only(args)
    _require_torch("init-checkpoint")
    from vinci_edge.model.checkpoint import init_checkpoint

    cfg = init_checkpoint(
        args.preset, args.out, seed=args.seed, llm_gguf=args.llm_gguf, dtype=args.dtype, progress=_progress
    )
    _progress(
        f"wrote {args.preset} checkpoint to {args.out} (LLM {cfg.llm_architecture}, hidden {cfg.hidden_size})"
    )
    return 0


def _init_config_only(args: argparse.Namespace) -> int:
    """Configs + tokenizer without weights: no torch needed (e.g. omnivinci-9b on a small machine)."""
    from vinci_edge.config import build_config
    from vinci_edge.errors import CheckpointError
    from vinci_edge.layout import write_configs
    from vinci_edge.presets import preset_components
    from vinci_edge.text.train_tokenizer import write_trained_tokenizer

    if args.llm_gguf:
        raise CheckpointError("--config-only cannot import a GGUF LLM", hint="drop one of the two options")
    out = Path(args.out)
    if (out / "config.json").exists():
        raise CheckpointError(f"{out} already holds a checkpoint", hint="choose an empty --out folder")
    root, comps = preset_components(args.preset)
    cfg = build_config(root, comps)
    write_trained_tokenizer(out / "llm", vocab_size=8192 if args.preset != "tiny" else 1024)
    write_configs(out, cfg)
    _progress(f"wrote {args.preset} configs and tokenizer to {out} (no weights)")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    _require_torch("generate")
    from vinci_edge.model.reference import Reference

    ref = Reference.from_checkpoint(args.checkpoint, dtype=args.dtype)
    on_text = None if args.json else (lambda s: print(s, end="", flush=True))
    answer = ref.answer(
        args.prompt, _gen_config(args), on_text=on_text, video=args.video, audio=args.audio, image=args.image
    )
    _print_answer(answer, args.json)
    return 0


# ---- parser ---------------------------------------------------------------------------------------
def _add_request_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video", type=Path, help="video file (its audio track is used too)")
    p.add_argument("--audio", type=Path, help="audio file (wav, mp3, flac, ...)")
    p.add_argument("--image", type=Path, help="image file")
    p.add_argument("--prompt", required=True, help="the question")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", help="stop string (repeatable)")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object: text, token_ids, timings, plan, warnings"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vinci-edge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init-checkpoint", help="write a random-weight checkpoint in the real layout")
    p.add_argument("--preset", required=True, choices=["omnivinci-9b", "nano", "tiny"])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--llm-gguf", type=Path, help="fill llm/ from a GGUF LLM (weights + tokenizer)")
    p.add_argument("--config-only", action="store_true", help="configs and tokenizer, no weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.set_defaults(func=cmd_init_checkpoint)

    p = sub.add_parser("generate", help="answer with the PyTorch reference (streams the answer)")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    _add_request_args(p)
    p.set_defaults(func=cmd_generate)
    return parser


def run(argv: list[str] | None = None, entry: Callable[[argparse.Namespace], int] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return (entry or args.func)(args)
    except VinciEdgeError as exc:
        print(f"vinci-edge: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"vinci-edge: hint: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vinci-edge: interrupted", file=sys.stderr)
        return 130


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
