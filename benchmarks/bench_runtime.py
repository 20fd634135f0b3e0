"""Runtime (ONNX Runtime, torch-free) against the PyTorch reference, same machine, same run.

nano preset, 8 frames + ~8 s of audio, a 32-token answer, CPU. Prints the machine (CPU model, ISA
flags, threads, ONNX Runtime, PyTorch's BLAS), then time to first token, prefill and decode tokens/s
of the reference (fp32), the runtime's fp32 engine and each `--precision` engine (quantized from the
fp32 one, cached under work-dirs/bench), with their ratios to the reference; writes
work-dirs/bench/runtime_vs_reference.json.

The contenders run round-robin (reference, fp32, int8-compute, reference, ...), so a machine whose
speed drifts (turbo, another process) moves them alike; each figure is the median of --runs with its
spread (min - max) beside it.

    .venv/bin/python benchmarks/bench_runtime.py [--runs 3] [--precision int8-compute]
        [--precision int8-compute-per-token] [--int8-range full]
"""

from __future__ import annotations

import argparse
import json

from common import BENCH, clip, engine_for, machine_info, median, nano_checkpoint, print_machine, say

from vinci_edge.generation import GenerationConfig

QUESTION = "Describe what happens in this clip."


def one_run(answer_fn) -> dict:
    a = answer_fn(GenerationConfig(max_new_tokens=32, ignore_eos=True))
    assert len(a.token_ids) == 32
    return {
        "ttft_s": a.metrics.time_to_first_token,
        "decode_tok_s": a.metrics.decode_tokens_per_second(),
        "prefill_s": a.metrics.totals()["prefill"],
        "prompt_positions": a.prompt_tokens,
        "stages": a.metrics.totals(),
        "token_ids": a.token_ids,
    }


def summary(runs: list[dict]) -> dict:
    """Medians of the runs, each with its spread (min, max), and the last run's stages."""
    out: dict = {"runs": len(runs)}
    for key in ("ttft_s", "decode_tok_s", "prefill_s"):
        xs = [r[key] for r in runs]
        out[key] = median(xs)
        out[key + "_spread"] = [min(xs), max(xs)]
    out["prompt_positions"] = runs[-1]["prompt_positions"]
    out["stages_last_run"] = runs[-1]["stages"]
    out["token_ids"] = runs[-1]["token_ids"]
    return out


PER_TOKEN = "int8-compute-per-token"  # int8-compute with every decoder kind per position in the prefill


def quantized_engine(fp32, precision: str, int8_range: str | None):
    from vinci_edge.quantization.int8_compute import PREFILL_BLOCKWISE
    from vinci_edge.quantization.quantize import quantize_engine

    compute = precision in ("int8-compute", PER_TOKEN)
    blockwise = () if precision == PER_TOKEN else PREFILL_BLOCKWISE
    name = "nano-" + ("int8-compute" if compute else precision)
    if compute:  # the folder names what it was made with (a cache, not a guess)
        name += f"-{int8_range}-" + ("+".join(blockwise) or "none") + "-blockwise"
    out = BENCH / name
    if not (out / "manifest.json").is_file():
        say(f"quantizing nano-fp32 -> {name}")
        quantize_engine(
            fp32,
            out,
            "int8-compute" if compute else precision,
            int8_range=int8_range if compute else None,
            prefill_blockwise=list(blockwise) if compute else None,
            force=True,
            progress=say,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--precision",
        action="append",
        default=[],
        choices=["int8-compute", PER_TOKEN, "int8-dynamic", "int4"],
        help="also time an engine of this precision (repeatable), beside fp32 and the reference; "
        f"{PER_TOKEN}: int8-compute with every decoder layer kind per position in the prefill "
        "(--int8-prefill-blockwise none)",
    )
    ap.add_argument(
        "--int8-range",
        choices=["reduced", "full"],
        default=None,
        help="int8-compute's range (default: full where the CPU has VNNI / AMX, else reduced)",
    )
    args = ap.parse_args()
    info = machine_info(torch_blas=True)
    print_machine(info)
    vnni = any(f in info["isa"] for f in ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp"))
    int8_range = args.int8_range or ("full" if vnni else "reduced")
    ckpt = nano_checkpoint()
    engine = engine_for(ckpt, "nano-fp32")
    video = clip()

    from vinci_edge.model.reference import Reference
    from vinci_edge.runtime.pipeline import Pipeline

    contenders = {}
    say("PyTorch reference (transformers, eager towers, sdpa LLM, fp32)")
    ref = Reference.from_checkpoint(ckpt, cache_chunks=0)  # encode every run, as the runtime below
    contenders["reference"] = lambda g: ref.answer(QUESTION, g, video=video)
    pipes = {"fp32": engine}
    for p in args.precision:
        pipes[p] = quantized_engine(engine, p, int8_range)
    for name, folder in pipes.items():
        say(f"vinci-edge runtime (ONNX Runtime CPU, {name}: {folder.name})")
        pipe = Pipeline.from_engine(folder, cache_chunks=0)  # encode every run, as the reference does
        pipe.warmup()
        contenders[name] = lambda g, pipe=pipe: pipe.ask(QUESTION, g, video=video)
    stitch = pipe.stitch_name
    for fn in contenders.values():  # warm-up (sessions, caches)
        fn(GenerationConfig(max_new_tokens=2, ignore_eos=True))
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for k in range(args.runs):
        for name, fn in contenders.items():
            runs[name].append(one_run(fn))
        say(f"round {k + 1}/{args.runs} done")
    res = {name: summary(r) for name, r in runs.items()}
    r = res["reference"]

    result = {
        "machine": info,
        "clip": str(video),
        "runs": args.runs,
        "order": "round-robin: " + ", ".join(contenders),
        "int8_range": int8_range if {"int8-compute", PER_TOKEN} & set(args.precision) else None,
        "reference": r,
        **{name: res[name] for name in pipes},
        "runtime": res["fp32"],  # the key earlier results used
        "same_tokens": {name: r["token_ids"] == res[name]["token_ids"] for name in pipes},
        "ttft_speedup": {name: r["ttft_s"] / res[name]["ttft_s"] for name in pipes},
        "prefill_speedup": {name: r["prefill_s"] / res[name]["prefill_s"] for name in pipes},
        "decode_speedup": {name: res[name]["decode_tok_s"] / r["decode_tok_s"] for name in pipes},
        "stitch": stitch,
    }
    BENCH.mkdir(parents=True, exist_ok=True)
    (BENCH / "runtime_vs_reference.json").write_text(json.dumps(result, indent=2))
    print()
    print(f"nano, {r['prompt_positions']} prompt positions (8 frames + audio, TEG), 32 new tokens, CPU")
    print(
        f"{info['cpu']}; {', '.join(info['isa'])}; {info['usable_cpus']} threads; torch BLAS "
        f"{(info.get('torch') or {}).get('blas')}"
    )
    names = list(res)
    print(f"{'':26}" + "".join(f"{n:>28}" for n in names))

    def row(label: str, key: str, fmt: str, better_low: bool) -> None:
        cells = []
        for n in names:
            x, (lo, hi) = res[n][key], res[n][key + "_spread"]
            ratio = (r[key] / x if better_low else x / r[key]) if n != "reference" else 1.0
            cells.append(f"{x:{fmt}} [{lo:{fmt}}-{hi:{fmt}}] {ratio:4.2f}x")
        print(f"{label:26}" + "".join(f"{c:>28}" for c in cells))

    row("time to first token (s)", "ttft_s", ".2f", True)
    row("  of which prefill (s)", "prefill_s", ".2f", True)
    row("decode tokens/s", "decode_tok_s", ".1f", False)
    print(
        "same 32 token ids as the reference: "
        + ", ".join(f"{n} {v}" for n, v in result["same_tokens"].items())
    )
    for stage in ("media_decode", "frame_preprocess", "log_mel", "vision", "audio", "stitch"):
        print(
            f"  {stage:18}"
            + "".join(f"{n} {res[n]['stages_last_run'].get(stage, 0):7.3f} s  " for n in names)
        )


if __name__ == "__main__":
    main()
