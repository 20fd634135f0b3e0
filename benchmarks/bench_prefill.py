"""Prefill and per-frame vision speed by kernel: fp32, int8-dynamic and int8-compute, same run.

For each model (`nano`: the Qwen2.5-0.5B-shaped LLM with random weights; `smol`: the real
SmolLM2-135M-Instruct) the decoder appends N positions to an empty cache, N over --sizes, for:

    fp32            the fp32 engine's decoder
    int8-dynamic    MatMulNBits 8-bit (the weight-only decode kernel)
    int8c-prefill   int8-compute's prefill graph (MatMulIntegerToFloat, per-position scales; the q/k/v
                    and gate/up projections block-wise, MatMulNBits: the default `prefill_blockwise`)
    int8c-prefill-qkv         the same with only q/k/v block-wise
    int8c-prefill-per-token   the same with every layer kind per position: what keeping kinds
                    block-wise for accuracy costs
    int8c-decode    int8-compute's decode graph forced for every N (MatMulNBits 8-bit)

The last two are the same engine with `min_positions` set to 1 and to "never": where the prefill
graph starts to beat the decode graph is the crossover that `min_positions` (16) should sit at.
The embeddings are rows of the LLM's own embedding table (real scale). Then the vision tower per
frame (batches of 1 and 8) for fp32, int8-dynamic and int8-compute.

Contenders run round-robin (the order rotates each round); every figure is a median of --rounds
with its spread (min - max). Prints the machine, a table per model; writes
work-dirs/bench/prefill.json.

    flock /tmp/vinci-bench.lock .venv/bin/python benchmarks/bench_prefill.py [--rounds 5]
        [--models nano,smol] [--sizes 1,4,8,16,32,64,128,256,636] [--int8-range full]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from common import (
    BENCH,
    engine_for,
    machine_info,
    median,
    nano_checkpoint,
    print_machine,
    say,
    smol_checkpoint,
)

NEVER = 1 << 30


def quantized(fp32, name: str, precision: str, int8_range: str | None, blockwise: list[str] | None = None):
    from vinci_edge.quantization.quantize import quantize_engine

    out = BENCH / name
    if not (out / "manifest.json").is_file():
        say(f"quantizing {fp32.name} -> {name}")
        quantize_engine(
            fp32, out, precision, int8_range=int8_range, prefill_blockwise=blockwise, force=True, progress=say
        )
    return out


def engines(model: str, int8_range: str) -> dict:
    ckpt = nano_checkpoint() if model == "nano" else smol_checkpoint()
    fp32 = engine_for(ckpt, f"{model}-fp32")
    return {
        "fp32": fp32,
        "int8-dynamic": quantized(fp32, f"{model}-int8-dynamic", "int8-dynamic", None),
        "int8-compute": quantized(
            fp32, f"{model}-int8-compute-{int8_range}-qkv+gate_up-blockwise", "int8-compute", int8_range
        ),
        "int8-compute-qkv": quantized(
            fp32, f"{model}-int8-compute-{int8_range}-qkv-blockwise", "int8-compute", int8_range, ["qkv"]
        ),
        "int8-compute-per-token": quantized(
            fp32, f"{model}-int8-compute-{int8_range}-none-blockwise", "int8-compute", int8_range, []
        ),
    }


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def spread(xs: list[float]) -> dict:
    return {"median": median(xs), "min": min(xs), "max": max(xs)}


def decoders(folders: dict, threads: int) -> dict:
    """name -> (OrtDecoder, min_positions to use); the int8-compute engine twice, one per graph."""
    from vinci_edge.runtime.pipeline import Pipeline

    out = {}
    for name, folder in folders.items():
        dec = Pipeline.from_engine(folder, threads=threads).decoder
        if name == "int8-compute":
            if dec.prefill_session is None:
                raise SystemExit(dec.prefill_note or f"{folder} has no prefill graph: re-quantize it")
            out["int8c-prefill"] = (dec, 1)
            out["int8c-decode"] = (dec, NEVER)
        elif name in ("int8-compute-qkv", "int8-compute-per-token"):
            out["int8c-prefill" + name.removeprefix("int8-compute")] = (dec, 1)
        else:
            out[name] = (dec, None)
    return out


def bench_prefill(folders: dict, sizes: list[int], rounds: int, threads: int) -> dict:
    from vinci_edge.runtime.engine import Engine

    table = Engine.load(folders["fp32"]).embed_table()
    rng = np.random.default_rng(0)
    decs = decoders(folders, threads)
    names = list(decs)
    times: dict[str, dict[int, list[float]]] = {n: {s: [] for s in sizes} for n in names}
    for size in sizes:
        x = table[rng.integers(0, table.shape[0], size)].astype(np.float32)
        for name in names:  # warm-up of this shape
            dec, lo = decs[name]
            if lo is not None:
                dec.prefill_min = lo
            dec.prefill(x)
        for k in range(rounds):
            order = names[k % len(names) :] + names[: k % len(names)]
            for name in order:
                dec, lo = decs[name]
                if lo is not None:
                    dec.prefill_min = lo
                times[name][size].append(timed(lambda dec=dec, x=x: dec.prefill(x)))
        say(f"  {size} positions: " + ", ".join(f"{n} {median(times[n][size]) * 1e3:.1f} ms" for n in names))
    return {n: {str(s): spread(times[n][s]) for s in sizes} for n in names}


def bench_vision(folders: dict, rounds: int, threads: int) -> dict:
    from vinci_edge.runtime.pipeline import Pipeline

    towers = {n: f for n, f in folders.items() if not n.startswith("int8-compute-")}  # one int8-compute
    runners = {n: Pipeline.from_engine(f, threads=threads).runner("vision") for n, f in towers.items()}
    shape = next(
        i for i in next(iter(runners.values())).session.get_inputs() if i.name == "pixel_values"
    ).shape
    side = int(shape[-1])
    rng = np.random.default_rng(0)
    out: dict = {}
    for batch in (1, 8):
        x = rng.uniform(-1, 1, (batch, 3, side, side)).astype(np.float32)
        names = list(runners)
        ts: dict[str, list[float]] = {n: [] for n in names}
        for n in names:
            runners[n].run({"pixel_values": x}, ["tokens"])
        for k in range(rounds):
            order = names[k % len(names) :] + names[: k % len(names)]
            for n in order:
                ts[n].append(timed(lambda r=runners[n], x=x: r.run({"pixel_values": x}, ["tokens"])) / batch)
        out[str(batch)] = {n: spread(ts[n]) for n in names}
        say(
            f"  vision, batch {batch}: " + ", ".join(f"{n} {median(ts[n]) * 1e3:.1f} ms/frame" for n in names)
        )
    return out


def print_tables(model: str, res: dict, sizes: list[int]) -> None:
    pre = res["prefill"]
    names = list(pre)
    print(f"\n{model}: prefill of N positions into an empty cache, tokens/s (median [min-max]) and x fp32")
    print(f"{'N':>6}" + "".join(f"{n:>30}" for n in names))
    for s in sizes:
        base = pre["fp32"][str(s)]["median"]
        cells = []
        for n in names:
            t = pre[n][str(s)]
            cells.append(
                f"{s / t['median']:8.0f} [{s / t['max']:.0f}-{s / t['min']:.0f}] {base / t['median']:4.2f}x"
            )
        print(f"{s:>6}" + "".join(f"{c:>30}" for c in cells))
    print(f"{model}: vision tower, ms per frame (median [min-max]) and x fp32")
    for batch, row in res["vision"].items():
        base = row["fp32"]["median"]
        cells = [
            f"{n} {t['median'] * 1e3:.1f} [{t['min'] * 1e3:.1f}-{t['max'] * 1e3:.1f}] "
            f"{base / t['median']:.2f}x"
            for n, t in row.items()
        ]
        print(f"  batch {batch}: " + "; ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", default="nano,smol")
    ap.add_argument("--sizes", default="1,4,8,16,32,64,128,256,636")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: one per core)")
    ap.add_argument("--int8-range", choices=["reduced", "full"], default=None)
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    if not models or set(models) - {"nano", "smol"}:
        ap.error("--models takes nano and/or smol")
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        ap.error("--sizes takes comma-separated position counts")
    if args.rounds < 1 or any(s < 1 for s in sizes):
        ap.error("--rounds and every size must be at least 1")
    info = machine_info()
    print_machine(info)
    vnni = any(f in info["isa"] for f in ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp"))
    int8_range = args.int8_range or ("full" if vnni else "reduced")
    say(f"int8-compute range: {int8_range}")
    result: dict = {"machine": info, "rounds": args.rounds, "int8_range": int8_range, "models": {}}
    for model in models:
        folders = engines(model, int8_range)
        say(f"{model}: prefill")
        res = {"prefill": bench_prefill(folders, sizes, args.rounds, args.threads)}
        say(f"{model}: vision")
        res["vision"] = bench_vision(folders, args.rounds, args.threads)
        result["models"][model] = res
    BENCH.mkdir(parents=True, exist_ok=True)
    (BENCH / "prefill.json").write_text(json.dumps(result, indent=2))
    print(f"\n{info['cpu']}; {', '.join(info['isa'])}; {info['usable_cpus']} threads; range {int8_range}")
    for model in models:
        print_tables(model, result["models"][model], sizes)


if __name__ == "__main__":
    main()
