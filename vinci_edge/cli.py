"""`vinci-edge` command line: run an edge engine of an omni-modal LLM, and make, quantize and profile one.

Options are checked where they are parsed (vinci_edge/cli_options.py), before anything is loaded.
A refused option and a vinci-edge error raised later are both one clear message (what is wrong,
what to do) and exit status 2; nothing prints a raw traceback for user mistakes. Long work says what
it is doing on stderr, one `[vinci-edge] ...` line per step; stdout holds only the answer (or the
one JSON object of --json)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vinci_edge import __version__
from vinci_edge import cli_options as opt
from vinci_edge import metrics as m
from vinci_edge.errors import MissingDependencyError, VinciEdgeError
from vinci_edge.manifest import DECODER_GRAPHS, FUSED
from vinci_edge.progress import to_stderr


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


def _media(args: argparse.Namespace) -> dict:
    """The request's media options, as `ask` / `answer` take them."""
    return {"video": args.video, "audio": args.audio, "image": args.image, "num_frames": args.num_frames}


class AnswerOut:
    """The answer's text on stdout, remembering whether its last line is still open, so that a
    message that interrupts it (Ctrl-C) starts on a line of its own."""

    open_line = False

    @classmethod
    def write(cls, text: str) -> None:
        print(text, end="", flush=True)
        if text:
            cls.open_line = not text.endswith("\n")

    @classmethod
    def end_line(cls) -> None:
        if cls.open_line:
            print(flush=True)
            cls.open_line = False


def _on_text(args: argparse.Namespace):
    """The answer streams to stdout as it is generated, unless --json prints it whole at the end."""
    return None if args.json else AnswerOut.write


def _print_answer(answer, as_json: bool) -> None:
    if as_json:
        print(json.dumps(answer.to_json(), indent=None))
    else:
        AnswerOut.write("\n")
        for w in answer.warnings:
            to_stderr(f"warning: {w}")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def stage_news(name: str, attrs: dict[str, Any]) -> str | None:
    """What `generate` and `run` say when a stage of the request starts; None for the quick stages
    and for decode (the streaming answer shows it)."""
    if name == m.LOAD:
        return f"loading the {attrs.get('stage', 'engine')} stage"
    if name == m.MEDIA_DECODE:
        return "decoding the media"
    if name == m.VISION:
        if "frames" in attrs:
            return f"encoding {_plural(attrs['frames'], 'video frame')} (vision)"
        return "encoding the image (vision)"
    if name == m.AUDIO:
        return f"encoding the audio ({_plural(attrs.get('chunks', 1), 'mel window')})"
    if name == m.PREFILL:
        return f"reading the prompt (prefill, {_plural(attrs.get('positions', 0), 'position')})"
    return None


class StageNews:
    """A `Metrics.on_stage` listener that says each stage once, on stderr, as it starts."""

    def __init__(self) -> None:
        self.said: set[str] = set()

    def __call__(self, name: str, attrs: dict[str, Any]) -> None:
        news = stage_news(name, attrs)
        if news is not None and news not in self.said:
            self.said.add(news)
            to_stderr(news)


# ---- subcommands -----------------------------------------------------------------------------------
def cmd_init_checkpoint(args: argparse.Namespace) -> int:
    if args.config_only:
        return _init_config_only(args)
    _require_torch("init-checkpoint")
    from vinci_edge.model.checkpoint import init_checkpoint

    cfg = init_checkpoint(
        args.preset, args.out, seed=args.seed, llm_gguf=args.llm_gguf, dtype=args.dtype, progress=to_stderr
    )
    to_stderr(
        f"wrote {args.preset} checkpoint to {args.out} (LLM {cfg.llm_architecture}, hidden {cfg.hidden_size})"
    )
    return 0


def _init_config_only(args: argparse.Namespace) -> int:
    """Configs + tokenizer without weights: no torch needed (e.g. omnivinci-9b on a small machine)."""
    from vinci_edge.config import build_config
    from vinci_edge.errors import CheckpointError
    from vinci_edge.layout import write_configs
    from vinci_edge.output_folder import CHECKPOINT, output_folder
    from vinci_edge.presets import preset_components
    from vinci_edge.text.train_tokenizer import write_trained_tokenizer

    if args.llm_gguf:
        raise CheckpointError("--config-only cannot import a GGUF LLM", hint="drop one of the two options")
    out = Path(args.out)
    root, comps = preset_components(args.preset)
    cfg = build_config(root, comps)
    with output_folder(out, kind=CHECKPOINT, progress=to_stderr) as folder:
        write_trained_tokenizer(folder / "llm", vocab_size=8192 if args.preset != "tiny" else 1024)
        write_configs(folder, cfg)
    to_stderr(f"wrote {args.preset} configs and tokenizer to {out} (no weights)")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    to_stderr("loading PyTorch")
    _require_torch("generate")
    from vinci_edge.model.reference import Reference

    to_stderr(f"loading the checkpoint {args.checkpoint} ({args.dtype})")
    ref = Reference.from_checkpoint(args.checkpoint, dtype=args.dtype, native_stitch=args.native_stitch)
    news = StageNews()
    ref.metrics_factory = lambda: m.Metrics(on_stage=news)
    _print_answer(
        ref.answer(args.prompt, _gen_config(args), on_text=_on_text(args), **_media(args)), args.json
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    _require_torch("export")
    from vinci_edge.export.engine import export_engine

    export_engine(
        args.checkpoint,
        args.out,
        stages=args.stages,
        dtype=DTYPE_NAMES[args.dtype],
        max_context=args.max_context,
        force=args.force,
        progress=to_stderr,
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The torch-free runtime on an engine folder."""
    from vinci_edge.runtime.pipeline import Pipeline

    to_stderr(f"loading the engine {args.engine}")
    pipe = Pipeline.from_engine(
        args.engine,
        provider=args.provider,
        stage_providers=args.stage_provider,
        threads=args.threads,
        context=args.context,
        backend=args.backend,
        plans=args.plans,
        decoder=args.decoder,
    )
    news = StageNews()
    pipe.load_metrics.on_stage = news  # the stages' sessions are made on first use
    pipe.metrics_factory = lambda: m.Metrics(on_stage=news)
    _print_answer(pipe.ask(args.prompt, _gen_config(args), on_text=_on_text(args), **_media(args)), args.json)
    return 0


DTYPE_NAMES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16"}


# ---- parser ---------------------------------------------------------------------------------------
def _add_request_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video", type=Path, help="video file; its audio track is used too (default: none)")
    p.add_argument("--audio", type=Path, help="audio file: wav, mp3, flac, ... (default: none)")
    p.add_argument("--image", type=Path, help="image file (default: none)")
    opt.add_prompt_options(p)
    p.add_argument(
        "--num-frames",
        type=opt.frame_count,
        default=None,
        help=f"video frames to sample, 1 - {opt.MAX_FRAMES} (default: the model's num_video_frames)",
    )
    p.add_argument("--max-new-tokens", type=opt.positive_int, default=64, help="at least 1 (default 64)")
    p.add_argument("--temperature", type=opt.non_negative_float, default=0.0, help="0 = greedy (default 0)")
    p.add_argument("--top-p", type=opt.probability, default=1.0, help="nucleus mass in (0, 1] (default 1)")
    p.add_argument("--top-k", type=opt.non_negative_int, default=0, help="0 = no top-k cut (default 0)")
    p.add_argument("--seed", type=opt.seed, default=None, help="sampling seed (default: unseeded)")
    p.add_argument("--stop", action="append", help="stop string, repeatable (default: none)")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object: text, token_ids, timings, plan, warnings"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = opt.CommandLineParser(prog="vinci-edge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("init-checkpoint", help="write a random-weight checkpoint in the real layout")
    p.add_argument(
        "--preset",
        required=True,
        choices=["omnivinci-9b", "nano", "tiny"],
        help="the model's shape: omnivinci-9b (the real layout and sizes), nano or tiny (small, for tests)",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="the checkpoint folder to write (new, or an empty folder)"
    )
    p.add_argument(
        "--llm-gguf",
        type=opt.gguf_file,
        metavar="FILE|NAME",
        help="fill llm/ from a GGUF LLM (weights + tokenizer): a .gguf file, or a name the package that "
        f"ships it resolves ({opt.gguf_names()}) (default: a random LLM of the preset)",
    )
    p.add_argument("--config-only", action="store_true", help="configs and tokenizer, no weights")
    p.add_argument("--seed", type=opt.seed, default=0, help="weight initialisation seed (default 0)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16"],
        help="weight dtype (default float32)",
    )
    p.set_defaults(func=cmd_init_checkpoint)

    p = sub.add_parser("generate", help="answer with the PyTorch reference (streams the answer)")
    p.add_argument(
        "--checkpoint", required=True, type=Path, help="checkpoint folder (nvidia/omnivinci layout)"
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16"],
        help="compute dtype (default float32)",
    )
    p.add_argument(
        "--native-stitch",
        action="store_true",
        help="stitch with the C++/CUDA kernel (torch custom op) instead of torch float64",
    )
    _add_request_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export", help="export a checkpoint to an engine folder (ONNX stages + manifest)")
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint folder to export")
    p.add_argument("--out", required=True, type=Path, help="the engine folder to write")
    p.add_argument(
        "--stages",
        type=opt.stage_list,
        default=None,
        help="comma-separated subset of vision,image_projector,audio,decoder (default: all it has)",
    )
    p.add_argument(
        "--dtype",
        default="fp32",
        choices=sorted(DTYPE_NAMES),
        help="weight dtype of the graphs (default fp32)",
    )
    p.add_argument(
        "--max-context",
        type=opt.context_length,
        default=4096,
        help="positions the decoder's KV cache can hold, capped by the LLM's maximum (default 4096)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing engine folder")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("run", help="answer with the torch-free runtime on an engine folder")
    p.add_argument("--engine", required=True, type=Path, help="engine folder (from export or quantize)")
    p.add_argument(
        "--backend",
        default="ort-cpu",
        choices=["ort-cpu", "ort-cuda", "tensorrt"],
        help="ort-cpu: ONNX Runtime (providers below); ort-cuda: ONNX Runtime's CUDA provider, I/O on the "
        "GPU; tensorrt: the plans build-engines wrote (default ort-cpu)",
    )
    p.add_argument(
        "--plans", type=Path, default=None, help="tensorrt: the plan folder (default ENGINE/tensorrt)"
    )
    opt.add_provider_options(p)
    p.add_argument(
        "--threads", type=opt.thread_count, default=0, help="CPU threads per stage (default 0: one per core)"
    )
    p.add_argument(
        "--context",
        type=opt.context_length,
        default=None,
        help="KV cache positions, at least 2 (default and most: the engine's --max-context)",
    )
    p.add_argument(
        "--decoder",
        choices=DECODER_GRAPHS,
        default=FUSED,
        help="decoder graph: fused (ONNX Runtime's, fastest) or portable (TensorRT's standard-operator "
        "graph, to check its maths on this machine) (default fused)",
    )
    _add_request_args(p)
    p.set_defaults(func=cmd_run)

    # Subcommands that live with their subsystem: each module has `register(subparsers)`.
    for module in (
        "vinci_edge.quantization.cli",
        "vinci_edge.quantization.report_cli",
        "vinci_edge.profiling.cli",
        "vinci_edge.live.cli",
        "vinci_edge.serve.cli",
        "vinci_edge.serve.client_cli",
        "vinci_edge.engines.cli",
        "vinci_edge.doctor.cli",
        "vinci_edge.training.cli",
        "vinci_edge.evaluation.cli",
    ):
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).register(sub)
    return parser


def run(argv: list[str] | None = None, entry: Callable[[argparse.Namespace], int] | None = None) -> int:
    """Parse `argv`, run its subcommand and return the exit status. A refused option and a vinci-edge
    error are both one `error:` line plus one `hint:` line on stderr and status 2 (--help still exits)."""
    try:
        args = build_parser().parse_args(argv)
        return (entry or args.func)(args)
    except opt.UsageError as exc:
        return _refuse(exc.prog, exc)
    except VinciEdgeError as exc:
        return _refuse("vinci-edge", exc)
    except KeyboardInterrupt:
        AnswerOut.end_line()  # a partial answer's line ends first: the message gets one of its own
        print("vinci-edge: interrupted", file=sys.stderr, flush=True)
        return 130


def _refuse(prog: str, exc: VinciEdgeError) -> int:
    print(f"{prog}: error: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"vinci-edge: hint: {exc.hint}", file=sys.stderr)
    return 2


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
