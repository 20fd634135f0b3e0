"""`vinci-edge doctor`: what this machine has for vinci-edge, whether each backend computes right, and
what to fix.

    vinci-edge doctor                  # a report on stdout
    vinci-edge doctor --json           # the same as one JSON object
    vinci-edge doctor --require tensorrt --require ort-cuda     # exit 1 unless those work (GPU CI)

Exit status: 0 when the CPU path works (ONNX Runtime on the CPU gives the reference answer; GPU
parts that are missing are reported, not failures); 1 when a check that could run failed, the CPU
path is missing, or a --require'd backend does not work; 2 for a bad option.
"""

from __future__ import annotations

import argparse
import json

from vinci_edge import cli_options as opt
from vinci_edge.doctor import checks as c

REQUIRABLE = ("ort-cuda", "tensorrt")
_BY_BACKEND = {"ort-cuda": "onnxruntime-cuda", "tensorrt": "tensorrt"}


def run_checks(atol: float) -> tuple[dict, list[c.Check]]:
    from vinci_edge.runtime.backends import probe

    p = probe()
    found = [
        c.ort_cpu(p, atol),
        c.integer_gemm(p),
        c.stitch(p, "cpp", atol),
        c.ort_cuda(p, atol),
        c.tensorrt(p, atol),
        c.stitch(p, "cuda", atol),
    ]
    return p.to_dict(), found


def exit_status(found: list[c.Check], require: list[str]) -> int:
    by_name = {k.name: k for k in found}
    if by_name["onnxruntime-cpu"].status != c.OK:
        return 1
    # An inexact integer GEMM costs int8-compute engines their prefill speed, not their answers (the
    # runtime prefills on the decode graph): reported, and the CPU path still works.
    if any(k.status == c.FAILED and k.name != "integer-gemm" for k in found):
        return 1
    if any(by_name[_BY_BACKEND[b]].status != c.OK for b in require):
        return 1
    return 0


def report(machine: dict, found: list[c.Check], status: int) -> str:
    gpu = machine["gpus"][0] if machine["gpus"] else None
    reasons = machine["reasons"]
    lines = ["vinci-edge doctor", ""]

    def row(what: str, value: str | None, why_key: str | None = None) -> None:
        shown = value if value else f"missing ({reasons.get(why_key or what, 'not found')})"
        lines.append(f"  {what:<16} {shown}")

    row("gpu", gpu and f"{gpu['name']} ({gpu['sm']}, {gpu['memory_bytes'] / 2**30:.1f} GiB)", "gpu")
    row("driver (CUDA)", machine["driver"], "gpu")
    row("CUDA runtime", machine["cuda_runtime"], "cuda_python")
    row("cuda-python", machine["cuda_python"], "cuda_python")
    row("TensorRT", machine["tensorrt"], "tensorrt")
    ort = machine["onnxruntime"] and f"{machine['onnxruntime']} ({', '.join(machine['ort_providers'])})"
    row("ONNX Runtime", ort, "onnxruntime")
    lib = machine["native_library"] and (
        f"{machine['native_library']} (kernels: {', '.join(machine['native_kernels'])}"
        + (f"; CUDA {machine['native_cuda_archs']}" if machine["native_cuda_archs"] else "")
        + ")"
    )
    row("native stitch", lib, "native_library")
    can = [k for k, v in machine["precisions"].items() if v]
    row("precisions", ", ".join(can) if can else None, "gpu")
    if gpu and not machine["precisions"]["fp8"]:
        lines.append(f"  {'':<16} no FP8 on {gpu['sm']} (FP8 needs sm_89+): use int8 / int4-awq engines")
    lines += ["", "checks:"]
    for k in found:
        where = "GPU" if k.gpu else "CPU"
        lines.append(f"  [{k.status:^7}] {k.name:<18} {where}  {k.detail}")
        if k.status != c.OK and k.fix:
            lines.append(f"  {'':<9} {'':<18}       fix: {k.fix}")
    cpu_ok = all(k.status == c.OK for k in found if not k.gpu and k.name == "onnxruntime-cpu")
    gpu_ok = [k.name for k in found if k.gpu and k.status == c.OK]
    lines += [
        "",
        f"CPU path: {'works' if cpu_ok else 'BROKEN'}; GPU backends working: {', '.join(gpu_ok) or 'none'}",
        f"exit status {status}",
    ]
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    machine, found = run_checks(args.atol)
    status = exit_status(found, args.require or [])
    if args.json:
        print(json.dumps({"machine": machine, "checks": [k.to_dict() for k in found], "exit_status": status}))
    else:
        print(report(machine, found, status))
    return status


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="what this machine has (GPU, CUDA, TensorRT, ONNX Runtime, kernels) and whether each works",
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    p.add_argument(
        "--require",
        action="append",
        choices=REQUIRABLE,
        help="exit 1 unless this GPU backend works, repeatable (default: none required)",
    )
    p.add_argument(
        "--atol",
        type=opt.FloatRange(0.0, 1.0, open_minimum=True),
        default=1e-3,
        help="largest absolute difference from the CPU reference that passes, in (0, 1] (default 1e-3)",
    )
    p.set_defaults(func=cmd_doctor)
