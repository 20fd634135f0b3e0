"""`vinci-edge build-engines`: one TensorRT plan per stage of an engine folder.

    vinci-edge build-engines --engine engine/smol-int8
    vinci-edge build-engines --engine engine/smol --precision fp16 --profile frames=1:4:8 --out plans/
    vinci-edge build-engines --engine engine/smol --dry-run        # the plan, no TensorRT needed

Plans go to --out (default ENGINE/tensorrt), one folder per device (GPU name, compute capability,
TensorRT version), each plan named by its key; `vinci-edge run --backend tensorrt` finds them there
and refuses one built for another device or graph. docs/gpu.md has the details.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vinci_edge import cli_options as opt
from vinci_edge.progress import to_stderr_as

_say = to_stderr_as("build-engines")

PROFILE_HELP = """\
profiles (--profile AXIS=MIN:OPT:MAX, repeatable; MIN >= 0, MIN <= OPT <= MAX, MAX >= 1):
  frames     vision: frames per call          (default 1:num_video_frames:8)
  blocks     image_projector: blocks per call (default 1:1:max_tiles+1)
  chunks     audio: 30 s mel windows per call (default 1:1:4)
  sequence   decoder: new positions per call  (default 1:one clip's prompt:max_context)
  past       decoder: cached positions        (default 0:0:max_context-1, decode 0:max_context/2-1:...)
"""


# ---- options, checked where they are parsed -------------------------------------------------------
def axis_range(text: str) -> tuple[str, Any]:
    """`type=` for AXIS=MIN:OPT:MAX."""
    from vinci_edge.runtime.profiles import AxisRange

    axis, sep, spec = text.partition("=")
    parts = spec.split(":")
    if not sep or not axis.strip() or len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not AXIS=MIN:OPT:MAX (e.g. frames=1:4:8)")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: MIN, OPT and MAX must be integers") from None
    try:
        return axis.strip(), AxisRange(*values)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


class AxisRanges(argparse.Action):
    """Repeated --profile into one {axis: AxisRange}; an axis given twice is refused."""

    def __call__(self, parser, namespace, values, option=None) -> None:
        axis, rng = values
        chosen = dict(getattr(namespace, self.dest) or {})
        if axis in chosen:
            raise argparse.ArgumentError(self, f"axis {axis} is given twice ({chosen[axis]} and {rng})")
        chosen[axis] = rng
        setattr(namespace, self.dest, chosen)


def cmd_build_engines(args: argparse.Namespace) -> int:
    from vinci_edge.engines.plan import BuildOptions, make_plan
    from vinci_edge.errors import EngineError
    from vinci_edge.output_folder import check_writable_dir
    from vinci_edge.runtime.backends import TENSORRT, probe, unavailable
    from vinci_edge.runtime.engine import Engine

    engine = Engine.load(args.engine)
    out = args.out or engine.folder / "tensorrt"
    check_writable_dir(out)
    options = BuildOptions(
        precision=args.precision,
        overrides=args.profile or {},
        workspace_mib=args.workspace,
        opt_level=args.opt_level,
        force=args.force,
    )
    machine = probe()
    device = machine.device_info()
    plans = make_plan(engine.folder, engine.manifest, args.stages, options, Path(out), device)
    if args.dry_run:
        if args.json:
            print(json.dumps({"device": device and device.slug, "plans": [p.to_dict() for p in plans]}))
        else:
            shown = device.describe() if device else f"none ({unavailable(TENSORRT, machine)})"
            print(f"device: {shown}")
            for p in plans:
                print(p.line())
        return 0
    why = unavailable(TENSORRT, machine)
    if why is not None or device is None:
        raise EngineError(
            f"build-engines needs TensorRT and a GPU: {why}",
            hint="--dry-run shows what would be built; build on the device that will run the engine",
        )
    from vinci_edge.engines.build import build_stage

    todo = [p for p in plans if p.action == "build"]
    _say(f"{device.describe()}: {len(todo)} to build, into {Path(out) / device.slug}")
    for i, p in enumerate(plans, 1):
        if p.action == "build":
            build_stage(p, device, Path(out), options, lambda m, i=i: _say(f"[{i}/{len(plans)}] {m}"))
        else:
            _say(f"[{i}/{len(plans)}] {p.line()}" + (f" ({p.reason})" if p.action == "reuse" else ""))
    if args.json:
        print(json.dumps({"device": device.slug, "plans": [p.to_dict() for p in plans]}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build-engines",
        help="build one TensorRT engine per stage of an engine folder, for this GPU",
        description=__doc__.splitlines()[0],
        epilog=PROFILE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--engine", required=True, type=Path, help="the engine folder (export or quantize wrote)")
    p.add_argument("--out", type=Path, default=None, help="where the plans go (default ENGINE/tensorrt)")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp16", "fp32"],
        help="fp32 / fp16 graphs: auto builds them in their own type (TF32 allowed), fp16 lets TensorRT "
        "use FP16 kernels, fp32 forbids TF32; Q/DQ graphs (int8, fp8, int4-awq) are always strongly "
        "typed (default auto)",
    )
    p.add_argument(
        "--stages", type=opt.stage_list, default=None, help="comma-separated stages (default: all it has)"
    )
    p.add_argument(
        "--profile",
        type=axis_range,
        action=AxisRanges,
        default=None,
        metavar="AXIS=MIN:OPT:MAX",
        help="override one dynamic axis's optimization profile, repeatable (default: from the manifest)",
    )
    p.add_argument(
        "--workspace",
        type=opt.IntRange(1, 1 << 20),
        default=None,
        metavar="MIB",
        help="builder workspace limit in MiB (default: TensorRT's, the device memory)",
    )
    p.add_argument(
        "--opt-level",
        type=opt.IntRange(0, 5),
        default=3,
        help="builder optimization level 0-5: higher searches longer for faster kernels (default 3)",
    )
    p.add_argument("--force", action="store_true", help="rebuild plans whose key is already built")
    p.add_argument("--dry-run", action="store_true", help="print what would be built; needs no TensorRT")
    p.add_argument(
        "--json", action="store_true", help="print the plan (or what was built) as one JSON object"
    )
    p.set_defaults(func=cmd_build_engines)
