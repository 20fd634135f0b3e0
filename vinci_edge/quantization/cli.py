"""`vinci-edge quantize`: an fp32 engine folder in, a quantized engine folder out.

    vinci-edge quantize --engine engine/smol --out engine/smol-int4 --precision int4
    vinci-edge quantize --engine engine/smol --out engine/smol-w8a8-w4 \\
        --precision vision=int8,audio=int8,decoder=int4-awq --target orin --calib-size 32

Progress goes to stderr; stdout gets one line naming the engine written (with --json, the
manifest's per-stage precision record as one JSON object), so scripts can read it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vinci_edge import cli_options as opt
from vinci_edge.progress import to_stderr_as

PRECISION_HELP = """\
precisions (one for every stage, or STAGE=PRECISION,... per stage):
  int8-dynamic  CPU (ONNX Runtime): int8 weights in blocks of 32 + int8 activations computed at run
                time (MatMulNBits 8-bit). No calibration. The fast CPU choice.
  int8-compute  CPU (ONNX Runtime): int8 x int8 integer GEMMs for time to first token: towers with
                one activation scale per call (DynamicQuantizeMatMul); the decoder's prefill with a
                scale per position (MatMulIntegerToFloat) but for the kinds in
                --int8-prefill-blockwise (default qkv,gate_up: scales per block of 32, as decode),
                its decode steps on MatMulNBits 8-bit, all on one int8 weights file. No
                calibration (but with --smoothquant). --int8-range full:
                8-bit activations, only for CPUs with VNNI / AMX or Arm dot products (default
                reduced: exact everywhere).
  int4          CPU (ONNX Runtime): 4-bit weights in blocks of 32 with a scale and a float
                minimum each (as GGUF Q4_1; MatMulNBits), the LM head at 8 bits (--head-bits 4:
                at 4, faster, less accurate). No calibration.
  int8          TensorRT: static Q/DQ on the linear layers, activation ranges calibrated (NVIDIA
                ModelOpt). --smoothquant ALPHA smooths the decoder's outliers first;
                --keep-fp32 down_proj leaves the MLP down projections out (LLM accuracy);
                --keep-fp32 auto lets a sensitivity sweep choose.
  fp8           TensorRT on Ada, Hopper, Thor: E4M3 Q/DQ, calibrated (ModelOpt). Not on Orin.
  int4-awq      TensorRT: 4-bit weights in blocks of 128 with AWQ scales, calibrated (ModelOpt).
  int4-dq       TensorRT: 4-bit DequantizeLinear blocks of 32 + a float minimum (Q4_1 kept exactly).
  fp32          leave the stage as exported.

per stage: --precision vision=int8,audio=int8,decoder=int4 (stages: vision, image_projector,
audio, decoder). A stage not named stays fp32; image_projector follows vision unless named.
ModelOpt precisions need `pip install 'vinci-edge[quant]'`.

calibration (int8, fp8, int4-awq; int8-dynamic with --smoothquant): by default the real clips
Debian installs (forensics-samples movie-hello.mp4, opencv-doc Megamind.avi) and the license
texts in /usr/share/common-licenses except GPL-3 (kept for the perplexity measurement); pass
--calib-video / --calib-audio / --calib-text where they are not installed or to use your own.

targets (--target checks the precisions before any work; leave it out to skip the check):
  cpu     int8-dynamic, int8-compute, int4
  orin    the cpu ones + int8, int4-awq, int4-dq (no FP8)
  thor, ada, hopper                 every precision
"""


_say = to_stderr_as("quantize")


def _layer_kinds(text: str) -> list[str]:
    """'none' or a comma list of decoder layer kinds, each known and named once."""
    from vinci_edge.quantization.modelopt_onnx import DECODER_LAYERS  # onnx: imported on use only

    if text.strip() == "none":
        return []
    kinds = [k.strip() for k in text.split(",")]
    for k in kinds:
        if k not in DECODER_LAYERS:
            raise argparse.ArgumentTypeError(
                f"unknown layer kind {k!r}: choose from {', '.join(DECODER_LAYERS)}, or none"
            )
    if len(set(kinds)) != len(kinds):
        raise argparse.ArgumentTypeError(f"a layer kind is named twice in {text!r}")
    return kinds


def cmd_quantize(args: argparse.Namespace) -> int:
    from vinci_edge.quantization.quantize import quantize_engine

    manifest = quantize_engine(
        args.engine,
        args.out,
        args.precision,
        target=args.target,
        calib_videos=args.calib_video,
        calib_audios=args.calib_audio,
        calib_texts=args.calib_text,
        calib_size=args.calib_size,
        seed=args.seed,
        smoothquant=args.smoothquant,
        keep_fp32=args.keep_fp32.split(",") if args.keep_fp32 else None,
        head_bits=args.head_bits,
        int8_range=args.int8_range,
        prefill_blockwise=args.int8_prefill_blockwise,
        force=args.force,
        progress=_say,
    )
    if args.json:
        record = {"engine": str(args.out), "precision": manifest.precision}
        print(json.dumps(record))
    else:
        stages = ", ".join(f"{s}={p}" for s, p in manifest.quantization["precisions"].items())
        print(f"wrote {args.out} ({stages})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="write an INT8 / FP8 / INT4 variant of an fp32 engine folder",
        description=__doc__.splitlines()[0],
        epilog=PRECISION_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--engine", required=True, type=Path, help="the fp32 engine folder `export` wrote")
    p.add_argument("--out", required=True, type=Path, help="the quantized engine folder to write")
    p.add_argument(
        "--precision",
        required=True,
        metavar="SPEC",
        help="a precision for every stage (int8-dynamic, int8-compute, int4, int8, fp8, int4-awq, "
        "int4-dq) or STAGE=PRECISION,... (see below)",
    )
    p.add_argument(
        "--target",
        choices=["cpu", "orin", "thor", "ada", "hopper"],
        help="where the engine will run: refuses precisions it cannot run (e.g. fp8 on orin); "
        "default: no target, nothing refused",
    )
    p.add_argument(
        "--calib-video",
        action="append",
        type=Path,
        metavar="FILE",
        help="calibration clip (repeatable; default: the Debian sample clips that are installed)",
    )
    p.add_argument(
        "--calib-audio",
        action="append",
        type=Path,
        metavar="FILE",
        help="calibration audio (repeatable; default: none, clips give the audio)",
    )
    p.add_argument(
        "--calib-text",
        action="append",
        type=Path,
        metavar="FILE",
        help="plain English text for the questions (repeatable; default: the Debian license texts "
        "but GPL-3, which the accuracy report measures on)",
    )
    p.add_argument(
        "--calib-size",
        type=opt.positive_int,
        default=16,
        metavar="N",
        help="calibration requests (default 16; more: steadier ranges, slower)",
    )
    p.add_argument("--seed", type=opt.seed, default=0, help="calibration sampling seed (default 0)")
    p.add_argument(
        "--smoothquant",
        type=opt.unit_interval,
        metavar="ALPHA",
        help="SmoothQuant the decoder before int8 / int8-dynamic / int8-compute (alpha in [0, 1]; "
        "of 0.5, 0.8 and 0.9, 0.8 kept SmolLM2 closest to fp32 at int8; int8-compute smooths the "
        "layers its prefill runs per position; needs calibration; default: off)",
    )
    p.add_argument(
        "--keep-fp32",
        metavar="LAYERS",
        help="decoder layers left out of static int8 / fp8, comma-separated: qkv, o_proj, gate_up, "
        "down_proj (SmolLM2: int8 + --smoothquant 0.8 + --keep-fp32 down_proj is +0.1%% perplexity, "
        "+4.6%% without it); or 'auto': quantize all, then keep the kinds a sensitivity sweep on "
        "256 tokens of calibration text needs for the upper end of the perplexity change's 95%% "
        "interval to be within 2%% (slow: a few minutes per kind tried on the CPU); default: none",
    )
    p.add_argument(
        "--head-bits",
        type=opt.IntChoice((8, 4)),
        help="the LM head's bits at int4 (default 8). 4: a faster decode step for some accuracy "
        "(SmolLM2: 4-6%% faster a step, +2.9%% perplexity instead of -0.2%%, top-1 agreement 0.84)",
    )
    p.add_argument(
        "--int8-range",
        choices=["reduced", "full"],
        help="int8-compute's integer range: reduced (default; 7-bit where x86 CPUs without VNNI "
        "would saturate, exact on every CPU) or full (8-bit; only for CPUs with VNNI / AMX or Arm "
        "dot products)",
    )
    p.add_argument(
        "--int8-prefill-blockwise",
        type=_layer_kinds,
        metavar="KINDS",
        help="int8-compute: decoder layer kinds whose prefill keeps the decode graph's block-wise "
        "kernel (MatMulNBits: a scale per position and block of 32 channels; slower, closer to "
        "fp32) instead of the per-position integer GEMM: a comma list of qkv, o_proj, gate_up, down_proj, "
        "or none (default qkv,gate_up: the measured choice, docs/quantization.md)",
    )
    p.add_argument("--force", action="store_true", help="replace --out if it is an engine folder")
    p.add_argument("--json", action="store_true", help="print the per-stage precision record as JSON")
    p.set_defaults(func=cmd_quantize)
