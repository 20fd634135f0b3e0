"""`vinci-edge quant-report`: what each quantized variant of an engine costs in accuracy.

    vinci-edge quant-report --engine engine/smol --variant engine/smol-int8 --variant engine/smol-int4 \
        --out report/

Writes accuracy.json (keys in docs/quantization.md), accuracy.md and accuracy.svg into --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vinci_edge import cli_options as opt
from vinci_edge.output_folder import check_writable_dir
from vinci_edge.progress import to_stderr_as

_say = to_stderr_as("quant-report")


# Perplexity over fewer tokens says nothing (AccuracySettings refuses it too, after loading).
MIN_WINDOW_TOKENS = 8


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quant-report",
        help="accuracy of quantized engines against their fp32 engine (JSON + Markdown + SVG)",
        description="Per variant and stage: cosine and max relative error of each stage's output against "
        "fp32 on real media, LLM perplexity on real English text, greedy-answer agreement and size.",
    )
    p.add_argument("--engine", required=True, type=Path, help="the fp32 engine (from `vinci-edge export`)")
    p.add_argument(
        "--variant",
        action="append",
        required=True,
        type=Path,
        metavar="DIR",
        help="a quantized engine (repeatable)",
    )
    p.add_argument("--out", required=True, type=Path, help="folder for accuracy.json / .md / .svg")
    p.add_argument("--text", type=Path, default=None, help="English text for perplexity (default: GPL-3)")
    p.add_argument(
        "--tokens",
        type=opt.IntRange(MIN_WINDOW_TOKENS),
        default=512,
        help="tokens per perplexity window, at least 8 (default 512)",
    )
    p.add_argument(
        "--windows",
        type=opt.positive_int,
        default=2,
        help="consecutive windows, each from an empty cache (default 2: 1022 predicted tokens; a single "
        "256-token window is too noisy to tell a few percent apart)",
    )
    p.add_argument(
        "--text-offset",
        type=opt.non_negative_int,
        default=0,
        help="first token of the first window (default 0)",
    )
    p.add_argument(
        "--answer-tokens", type=opt.positive_int, default=32, help="tokens per greedy answer (default 32)"
    )
    p.add_argument(
        "--video",
        type=Path,
        default=None,
        help="clip for vision/audio and a video prompt (default: Debian's movie-hello.mp4 when installed)",
    )
    p.add_argument(
        "--audio",
        type=Path,
        default=None,
        help="audio file for the audio stage (default: ALSA's Front_Center.wav when installed)",
    )
    p.add_argument(
        "--image",
        type=Path,
        default=None,
        help="image for the dynamic-S2 image projector (default: opencv-doc's fruits.jpg when installed)",
    )
    p.add_argument(
        "--num-frames", type=opt.frame_count, default=None, help="frames per video (default: model's)"
    )
    p.add_argument("--towers-only", action="store_true", help="skip the LLM (perplexity and answers)")
    p.add_argument(
        "--threads", type=opt.thread_count, default=0, help="CPU threads per stage (default 0: one per core)"
    )
    p.set_defaults(func=cmd_quant_report)


def cmd_quant_report(args: argparse.Namespace) -> int:
    from vinci_edge.quantization.accuracy.measure import measure
    from vinci_edge.quantization.accuracy.settings import AccuracySettings
    from vinci_edge.quantization.report import markdown, write_report

    settings = AccuracySettings(
        text=args.text,
        text_tokens=args.tokens,
        text_windows=args.windows,
        text_offset=args.text_offset,
        answer_tokens=args.answer_tokens,
        video=args.video,
        audio=args.audio,
        image=args.image,
        num_frames=args.num_frames,
        decoder=not args.towers_only,
    )
    check_writable_dir(args.out)  # now, not after the measuring
    report = measure(args.engine, args.variant, settings, progress=_say, threads=args.threads)
    paths = write_report(report, args.out)
    print(markdown(report))
    _say("wrote " + ", ".join(str(p) for p in paths))
    return 0
