"""Quantized engines against fp32 on the CPU: decode tokens/s, time to first token, and accuracy.

SmolLM2 checkpoint (tiny towers + the real SmolLM2-135M-Instruct LLM), its fp32 engine and every
variant below, built with `quantize_engine` (or reused) under work-dirs/bench/quant/:

    build     quantize each variant (a failure is recorded with its error, not hidden)
    speed     all engines loaded, then round-robin rounds (the order rotates each round) of one
              request each: the real 8.3 s clip + a question, a fixed-length greedy answer;
              medians of time to first token and decode tokens/s, ratios against fp32 of the
              same run -> speed.json / speed.md
    accuracy  `vinci-edge quant-report` on all of them -> report/accuracy.{json,md,svg}
    nano      (--nano) the nano preset's towers at int8 on real media, towers only
              (nano has random weights: its LLM perplexity means nothing) -> nano/accuracy.*

--model nano runs build and speed on the nano preset instead (a Qwen2.5-0.5B-shaped LLM with random
weights, the smallest of the Qwen2.5 family OmniVinci's 7B LLM comes from; the presets' CPU
benchmark model): decode speed does not depend on the weights' values, and the 135M SmolLM2 is so
small that per-layer costs the weights do not set (attention over the cache, norms, node launches)
are a third of an int4 step -> nano-<variant>/, speed-nano.json / speed-nano.md. Accuracy stays on
SmolLM2 (real weights).

    .venv/bin/python benchmarks/bench_quant.py --phase build [--rebuild]
    flock /tmp/vinci-bench.lock .venv/bin/python benchmarks/bench_quant.py --phase speed
    .venv/bin/python benchmarks/bench_quant.py --model nano --phase build --variants int8-dynamic,int4
    flock /tmp/vinci-bench.lock .venv/bin/python benchmarks/bench_quant.py --model nano --phase speed \
        --variants int8-dynamic,int4
    .venv/bin/python benchmarks/bench_quant.py --phase accuracy [--nano]

Speed goals (issue 4): dynamic INT8 at least 2x fp32 decode, INT4 at least 3x. The static INT8,
FP8 and INT4-AWQ graphs are Q/DQ graphs for TensorRT: ONNX Runtime's CPU provider runs them (that
is how their accuracy is measured) but slower than fp32; their speed here says nothing about TensorRT.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from pathlib import Path

from common import (
    BENCH,
    clip,
    engine_for,
    machine_info,
    median,
    nano_checkpoint,
    print_machine,
    say,
    smol_checkpoint,
)

QUANT = BENCH / "quant"
QUESTION = "Describe what happens in this clip."
# name -> (--precision, SmoothQuant alpha)
VARIANTS: dict[str, tuple[str, float | None]] = {
    "int8-dynamic": ("int8-dynamic", None),
    "int4": ("int4", None),
    "int4-head4": ("int4", None),  # + the LM head at 4 bits too (--head-bits 4: speed for accuracy)
    "int8": ("int8", None),
    "int8-sq": ("int8", 0.8),  # the best of 0.5 / 0.8 / 0.9 on SmolLM2 (int8.py)
    "int8-sq-keep": ("int8", 0.8),  # + the MLP down projections left fp32 (KEEP_FP32)
    "int8-sq-auto": ("int8", 0.8),  # + the kept kinds chosen by the sensitivity sweep
    "fp8": ("fp8", None),
    "fp8-keep": ("fp8", None),  # + the MLP down projections left fp32
    "fp8-auto": ("fp8", None),  # + the kept kinds chosen by the sensitivity sweep
    "int4-awq": ("int4-awq", None),
    "mixed": ("vision=int8,audio=int8,decoder=int4", None),
}
KEEP_FP32 = {  # --keep-fp32 per variant
    "int8-sq-keep": ["down_proj"],
    "int8-sq-auto": ["auto"],
    "fp8-keep": ["down_proj"],
    "fp8-auto": ["auto"],
}
HEAD_BITS = {"int4-head4": 4}  # --head-bits per variant
SPEED_GOALS = {"int8-dynamic": 2.0, "int4": 3.0, "int4-head4": 3.0}  # x fp32 decode tokens/s
# Q/DQ graphs meant for TensorRT
TRT_ONLY = {"int8", "int8-sq", "int8-sq-keep", "int8-sq-auto", "fp8", "fp8-keep", "fp8-auto", "int4-awq"}


MODELS = ("smol", "nano")


def _errors_path(model: str = "smol") -> Path:
    return QUANT / ("build_errors.json" if model == "smol" else f"build_errors-{model}.json")


def fp32_engine(model: str) -> Path:
    if model == "nano":
        return engine_for(nano_checkpoint(), "nano-fp32")
    return engine_for(smol_checkpoint(), "smol-fp32")


def build(names: list[str], calib_size: int, rebuild: bool = False, model: str = "smol") -> dict[str, str]:
    """Quantize what is missing (everything with `rebuild`: after a change to the quantizers);
    returns {name: error} of the variants that failed."""
    from vinci_edge.quantization.quantize import quantize_engine

    fp32 = fp32_engine(model)
    errors: dict[str, str] = {}
    for name in names:
        precision, alpha = VARIANTS[name]
        out = QUANT / f"{model}-{name}"
        if (out / "manifest.json").is_file() and not rebuild:
            say(f"{name}: reusing {out}")
            continue
        t0 = time.perf_counter()
        try:
            quantize_engine(
                fp32,
                out,
                precision,
                calib_size=calib_size,
                seed=0,
                smoothquant=alpha,
                keep_fp32=KEEP_FP32.get(name),
                head_bits=HEAD_BITS.get(name),
                force=rebuild,
                progress=lambda s, n=name: say(f"{n}: {s}"),
            )
            say(f"{name}: built in {time.perf_counter() - t0:.0f} s")
        except Exception as exc:  # recorded in the report: a variant that cannot be built is a finding
            lines = str(exc).strip().splitlines()
            errors[name] = f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:300]
            say(f"{name}: FAILED after {time.perf_counter() - t0:.0f} s: {errors[name]}")
            traceback.print_exc()
    QUANT.mkdir(parents=True, exist_ok=True)
    _errors_path(model).write_text(json.dumps(errors, indent=2) + "\n")
    return errors


def built(names: list[str], model: str = "smol") -> dict[str, Path]:
    folders = {n: QUANT / f"{model}-{n}" for n in names}
    return {n: f for n, f in folders.items() if (f / "manifest.json").is_file()}


def speed(names: list[str], rounds: int, new_tokens: int, threads: int, model: str = "smol") -> dict:
    from vinci_edge.generation import GenerationConfig
    from vinci_edge.runtime.pipeline import Pipeline

    engines = {"fp32": BENCH / f"{model}-fp32", **built(names, model)}
    video = clip()
    pipes = {}
    for name, folder in engines.items():
        say(f"loading {name}")
        pipes[name] = Pipeline.from_engine(folder, threads=threads, cache_chunks=0)
        pipes[name].warmup()
        pipes[name].ask(QUESTION, GenerationConfig(max_new_tokens=2, ignore_eos=True), video=video)
    gen = GenerationConfig(max_new_tokens=new_tokens, ignore_eos=True)
    runs: dict[str, dict[str, list[float]]] = {n: {"ttft": [], "tps": [], "prefill": []} for n in pipes}
    order = list(pipes)
    positions = {}
    # The machine is shared: the 1-minute load average after each round shows whether something else
    # ran meanwhile (this process alone keeps it near the thread count).
    load = []
    for r in range(rounds):
        rotated = order[r % len(order) :] + order[: r % len(order)]  # no variant always goes first
        for name in rotated:
            a = pipes[name].ask(QUESTION, gen, video=video)
            assert len(a.token_ids) == new_tokens
            runs[name]["ttft"].append(a.metrics.time_to_first_token)
            runs[name]["tps"].append(a.metrics.decode_tokens_per_second())
            runs[name]["prefill"].append(a.metrics.totals()["prefill"])
            positions[name] = a.prompt_tokens
            say(
                f"round {r + 1}/{rounds} {name}: ttft {runs[name]['ttft'][-1]:.3f} s, "
                f"decode {runs[name]['tps'][-1]:.1f} tok/s"
            )
        load.append(round(os.getloadavg()[0], 2))
        say(f"round {r + 1}/{rounds}: load average {load[-1]}")
    results = {}
    for name, v in runs.items():
        med = {k: median(x) for k, x in v.items()}
        goal = SPEED_GOALS.get(name)
        # Ratios per round (against fp32 in the same round), then the median: a load that comes and
        # goes on the shared machine shifts a whole round, not one engine.
        decode_ratio = median([t / b for t, b in zip(v["tps"], runs["fp32"]["tps"])])
        ttft_ratio = median([b / t for t, b in zip(v["ttft"], runs["fp32"]["ttft"])])
        results[name] = {
            "precision": "fp32" if name == "fp32" else VARIANTS[name][0],
            "ttft_s": med["ttft"],
            "prefill_s": med["prefill"],
            "decode_tok_s": med["tps"],
            "decode_x_fp32": decode_ratio,
            "ttft_x_fp32": ttft_ratio,  # > 1: faster than fp32
            "runs": v,
            "goal_decode_x": goal,
            "goal_met": None if goal is None else bool(decode_ratio >= goal),
            "tensorrt_graph": name in TRT_ONLY,
        }
    return {
        "model": model,
        "machine": {**_cpu(), "threads": threads or os.cpu_count()},
        "request": {
            "question": QUESTION,
            "video": str(video),
            "prompt_positions": positions.get("fp32"),
            "new_tokens": new_tokens,
        },
        "rounds": rounds,
        "load_average_per_round": load,
        "results": results,
    }


def _cpu() -> dict:
    """The CPU and the SIMD features the int8 / int4 kernels pick their code path by."""
    from vinci_edge.host import cpu_name, isa_flags

    simd = [f for f in isa_flags() if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")]
    return {"cpu": cpu_name(), "simd": simd, "cores": os.cpu_count()}


def speed_markdown(s: dict) -> str:
    head = "| engine | precision | decode tok/s | x fp32 | goal | TTFT s | x fp32 | prefill s |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for name, r in s["results"].items():
        goal = (
            "-"
            if r["goal_decode_x"] is None
            else f"{'met' if r['goal_met'] else 'NOT met'} (>= {r['goal_decode_x']:g}x)"
        )
        note = " (TensorRT graph)" if r["tensorrt_graph"] else ""
        lines.append(
            f"| {name}{note} | {r['precision']} | {r['decode_tok_s']:.1f} | {r['decode_x_fp32']:.2f} | "
            f"{goal} | {r['ttft_s']:.3f} | {r['ttft_x_fp32']:.2f} | {r['prefill_s']:.3f} |"
        )
    req, mach = s["request"], s["machine"]
    lines += [
        "",
        f"{s['rounds']} round-robin rounds, medians (ratios: median of per-round ratios); "
        f"request: {Path(req['video']).name} + "
        f'"{req["question"]}" ({req["prompt_positions"]} prompt positions), {req["new_tokens"]} new tokens; '
        f"x fp32 > 1 is faster. Model: {s.get('model', 'smol')}. "
        f"CPU: {mach['cpu']} ({', '.join(mach.get('simd', []))}), "
        f"threads: {mach['threads']}; "
        f"load average after each round: {s.get('load_average_per_round')}.",
    ]
    return "\n".join(lines) + "\n"


def accuracy(names: list[str], tokens: int, windows: int, answer_tokens: int) -> dict:
    from vinci_edge.quantization.accuracy.measure import measure
    from vinci_edge.quantization.accuracy.record import failed_entry
    from vinci_edge.quantization.accuracy.settings import AccuracySettings
    from vinci_edge.quantization.report import markdown, write_report

    engines = built(names)
    errors = json.loads(_errors_path().read_text()) if _errors_path().is_file() else {}
    settings = AccuracySettings(
        text_tokens=tokens, text_windows=windows, answer_tokens=answer_tokens, video=clip()
    )
    report = measure(BENCH / "smol-fp32", list(engines.values()), settings, say, names=list(engines))
    for name in names:
        if name not in engines:
            err = errors.get(name, "not built (run --phase build)")
            report["variants"].append(failed_entry(name, QUANT / f"smol-{name}", VARIANTS[name][0], err))
    write_report(report, QUANT / "report")
    print(markdown(report))
    return report


def nano_towers() -> dict:
    """The nano preset's towers (random weights) at static INT8 and dynamic INT8, towers only."""
    from vinci_edge.quantization.accuracy.measure import measure
    from vinci_edge.quantization.accuracy.settings import AccuracySettings
    from vinci_edge.quantization.quantize import quantize_engine
    from vinci_edge.quantization.report import markdown, write_report

    fp32 = engine_for(nano_checkpoint(), "nano-fp32")
    variants = {}
    for name, precision in (
        ("towers-int8", "vision=int8,audio=int8"),
        ("towers-int8-dynamic", "vision=int8-dynamic,audio=int8-dynamic"),
    ):
        out = QUANT / f"nano-{name}"
        if not (out / "manifest.json").is_file():
            quantize_engine(
                fp32, out, precision, calib_size=8, seed=0, progress=lambda s, n=name: say(f"nano {n}: {s}")
            )
        variants[name] = out
    settings = AccuracySettings(video=clip(), decoder=False)
    report = measure(fp32, list(variants.values()), settings, say, names=list(variants))
    write_report(report, QUANT / "nano")
    print(markdown(report))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", choices=("build", "speed", "accuracy", "all"), default="all")
    ap.add_argument(
        "--model",
        choices=MODELS,
        default="smol",
        help="smol: SmolLM2-135M (real weights); nano: Qwen2.5-0.5B-shaped, random weights "
        "(build and speed only)",
    )
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--calib-size", type=int, default=16)
    ap.add_argument("--rebuild", action="store_true", help="re-quantize variants that exist (build phase)")
    ap.add_argument("--tokens", type=int, default=512, help="tokens per perplexity window")
    ap.add_argument("--windows", type=int, default=2, help="perplexity windows")
    ap.add_argument("--answer-tokens", type=int, default=32)
    ap.add_argument("--nano", action="store_true", help="also the nano towers row (accuracy phase)")
    args = ap.parse_args()
    print_machine(machine_info(torch_blas=True))
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    QUANT.mkdir(parents=True, exist_ok=True)
    if args.model != "smol" and args.phase in ("accuracy", "all"):
        raise SystemExit(
            f"--model {args.model} has random weights: its accuracy means nothing (--phase build or speed)"
        )
    if args.phase in ("build", "all"):
        build(names, args.calib_size, args.rebuild, args.model)
    if args.phase in ("speed", "all"):
        s = speed(names, args.rounds, args.new_tokens, args.threads, args.model)
        stem = "speed" if args.model == "smol" else f"speed-{args.model}"
        (QUANT / f"{stem}.json").write_text(json.dumps(s, indent=2) + "\n")
        (QUANT / f"{stem}.md").write_text(speed_markdown(s))
        print(speed_markdown(s))
    if args.phase in ("accuracy", "all"):
        accuracy(names, args.tokens, args.windows, args.answer_tokens)
        if args.nano:
            nano_towers()
    say(f"results in {QUANT}")


if __name__ == "__main__":
    main()
