"""The decoder stage against its peers on SmolLM2-135M-Instruct, same machine, same run.

    vinci-edge   the engine's decoder.onnx driven through the runtime's OrtDecoder.append, exactly as
                 the pipeline drives it (fp32; `--engine DIR` adds another engine, e.g. INT4 / INT8)
    optimum      ORTModelForCausalLM on an optimum-onnx export of the same llm/ folder (fp32)
    llama.cpp    the xllamacpp wheel running the GGUF file the checkpoint was made from (Q4_1 weights,
                 Q8_0 embedding / output head)

Every system gets the same 512 prompt token ids (real English text) and decodes 128 greedy tokens;
the runs go round-robin over the systems, so slow phases of a shared machine hit all of them alike.
Reported: medians of prefill tokens/s and decode tokens/s, greedy agreement with vinci-edge, and each
system's decode against its memory-bandwidth bound. A peer that cannot be installed or run is
reported with the reason and skipped; no number is ever made up.

    .venv/bin/python benchmarks/bench_peers.py [--runs 5] [--threads 2] [--engine DIR]

Writes work-dirs/bench/peers.json and work-dirs/bench/peers.html. On a shared machine, run it under
`flock /tmp/vinci-bench.lock ...` so it never overlaps another benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from common import BENCH, engine_for, machine_info, median, print_machine, say, smol_checkpoint

from vinci_edge import svg
from vinci_edge.assets import smollm2_gguf
from vinci_edge.profiling import bandwidth
from vinci_edge.profiling.onnx_weights import read_graph_weights

PROMPT_TOKENS = 512
NEW_TOKENS = 128
AGREE_TOKENS = 16
TEXT = Path("/usr/share/common-licenses/GPL-3")
QUESTION = "What is the capital of France?"


@dataclass
class Timing:
    prefill_s: float
    decode_s: float  # NEW_TOKENS decode steps
    tokens: list[int]  # greedy tokens: the prefill's, then one per decode step (when asked for)


@dataclass
class System:
    """One way of running the LLM: `run(ids, new, with_tokens)` prefills `ids`, decodes `new` greedy
    steps, and returns the greedy tokens when asked (a peer may pay extra to report them)."""

    name: str
    precision: str  # "fp32", "4-bit", "8-bit", ...
    weights: str  # what is stored, in words
    run: Callable[[list[int], int, bool], Timing]
    bytes_per_token: int  # weight bytes one decode step reads
    kv_bytes_per_position: int
    runs: list[Timing] = field(default_factory=list)


# ---- prompts ----------------------------------------------------------------------------------------
def prompt_ids(tokenizer) -> list[int]:
    """PROMPT_TOKENS ids of real English text (the GPL-3 text, which Debian always ships)."""
    text = TEXT.read_text() if TEXT.is_file() else "The quick brown fox jumps over the lazy dog. " * 200
    ids = tokenizer.encode(text)
    while len(ids) < PROMPT_TOKENS:
        ids += ids
    return ids[:PROMPT_TOKENS]


def chat_ids(tokenizer) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True)
    return tokenizer.encode(text)


# ---- vinci-edge ---------------------------------------------------------------------------------------
def vinci_system(engine: Path, threads: int, name: str) -> System:
    from vinci_edge.runtime.pipeline import Pipeline

    pipe = Pipeline.from_engine(engine, threads=threads)
    decoder, table = pipe.decoder, pipe.text_table

    def run(ids: list[int], new: int, with_tokens: bool = False) -> Timing:
        decoder.reset()
        start = time.perf_counter()
        logits = decoder.append(table[ids])
        prefill = time.perf_counter() - start
        tokens = [int(np.argmax(logits))]
        start = time.perf_counter()
        for _ in range(new):
            logits = decoder.append(table[tokens[-1]][None])
            tokens.append(int(np.argmax(logits)))
        return Timing(prefill, time.perf_counter() - start, tokens)

    spec = pipe.engine.manifest.decoder
    prec = pipe.engine.manifest.precision.get("decoder", {"dtype": spec.dtype})
    quantized = prec.get("precision") or ("" if prec.get("method", "none") == "none" else prec["method"])
    return System(
        name,
        precision_class(prec),
        quantized or spec.dtype,
        run,
        read_graph_weights(engine / "decoder.onnx").bytes_read_per_call(),
        bandwidth.kv_bytes_per_position(spec),
    )


def precision_class(precision: dict[str, Any]) -> str:
    """What makes two systems comparable: the bits per stored matmul weight (from the manifest's
    precision entry of the decoder: dtype, and for quantized engines precision / method)."""
    text = f"{precision.get('precision', '')} {precision.get('method', '')}".lower()
    if any(k in text for k in ("int4", "4-bit", "nf4", "q4")):
        return "4-bit"
    if any(k in text for k in ("int8", "8-bit", "fp8", "q8")):
        return "8-bit"
    dtype = precision.get("dtype", "?")
    return {"float32": "fp32", "float16": "fp16"}.get(dtype, dtype)


# ---- optimum -----------------------------------------------------------------------------------------
def optimum_system(llm_dir: Path, threads: int) -> System:
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    out = BENCH / "smol-optimum"
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if not (out / "model.onnx").is_file():
        say(f"exporting {llm_dir} with optimum-onnx (fp32)")
        model = ORTModelForCausalLM.from_pretrained(llm_dir, export=True)
        model.save_pretrained(out)
    model = ORTModelForCausalLM.from_pretrained(out, session_options=so, provider="CPUExecutionProvider")

    @torch.inference_mode()
    def run(ids: list[int], new: int, with_tokens: bool = False) -> Timing:
        x = torch.tensor([ids])
        start = time.perf_counter()
        o = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True)
        prefill = time.perf_counter() - start
        tokens = [int(o.logits[0, -1].argmax())]
        past, length = o.past_key_values, len(ids)
        start = time.perf_counter()
        for _ in range(new):
            length += 1
            o = model(
                input_ids=torch.tensor([[tokens[-1]]]),
                attention_mask=torch.ones(1, length, dtype=torch.long),
                past_key_values=past,
                use_cache=True,
            )
            past = o.past_key_values
            tokens.append(int(o.logits[0, -1].argmax()))
        return Timing(prefill, time.perf_counter() - start, tokens)

    cfg = model.config
    kv = (
        2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4
    )
    return System(
        "optimum ORT", "fp32", "fp32", run, read_graph_weights(out / "model.onnx").bytes_read_per_call(), kv
    )


# ---- llama.cpp -----------------------------------------------------------------------------------------
def llamacpp_system(gguf: Path, threads: int) -> System:
    import xllamacpp
    from gguf import GGUFReader

    p = xllamacpp.CommonParams()
    p.model.path = str(gguf)
    p.n_ctx = 1024
    p.n_batch = p.n_ubatch = PROMPT_TOKENS  # the whole prompt in one batch, as the others do
    p.n_parallel = 1
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    server = xllamacpp.Server(p)

    def run(ids: list[int], new: int, with_tokens: bool = False) -> Timing:
        # llama.cpp samples the first token from the prompt's logits too, so `new` + 1 tokens are the
        # prefill's token and `new` decode steps; its own timings exclude request parsing. Token ids
        # come only with log-probabilities, which cost a softmax per token: asked for only when needed.
        request = {"prompt": ids, "n_predict": new + 1, "ignore_eos": True, "temperature": 0.0, "top_k": 1}
        request["cache_prompt"] = False  # every run prefills the whole prompt
        if with_tokens:
            request["n_probs"] = 1
        r = server.handle_completions(request)
        if "error" in r:
            raise RuntimeError(r["error"])
        t = r["timings"]
        tokens = [c["id"] for c in r["choices"][0]["logprobs"]["content"]] if with_tokens else []
        per_step = t["predicted_ms"] / max(t["predicted_n"] - 1, 1) / 1e3
        return Timing(t["prompt_ms"] / 1e3, per_step * new, tokens)

    reader = GGUFReader(str(gguf))
    tensors = {t.name: int(t.n_bytes) for t in reader.tensors}
    # Every block matrix once per token; the embedding too when it doubles as the (tied) output head.
    head = "output.weight" if "output.weight" in tensors else "token_embd.weight"
    per_token = (
        sum(b for n, b in tensors.items() if n.startswith("blk.") and n.endswith(".weight")) + tensors[head]
    )
    kv = 2 * 30 * 3 * 64 * 2  # f16 cache (llama.cpp's default) of SmolLM2-135M: 30 layers, 3 kv heads x 64
    return System("llama.cpp (xllamacpp)", "4-bit", "Q4_1, Q8_0 embedding/head", run, per_token, kv)


# ---- measuring ---------------------------------------------------------------------------------------
def try_system(make: Callable[[], System], name: str, skipped: dict[str, str]) -> System | None:
    try:
        return make()
    except Exception as exc:  # a peer that cannot be installed or loaded is reported, never faked
        skipped[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        say(f"skipping {name}: {skipped[name]}")
        return None


def agreement(a: list[int], b: list[int]) -> int:
    """How many leading tokens two greedy answers share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def greedy_answers(s: System, prompt: list[int], chat: list[int]) -> dict[str, list[int]]:
    """The first AGREE_TOKENS greedy tokens after the long prompt and after a chat question; the
    first call also warms the system up (first-call allocations, caches)."""
    return {
        "prompt": s.run(prompt, AGREE_TOKENS - 1, True).tokens,
        "chat": s.run(chat, AGREE_TOKENS - 1, True).tokens,
    }


def summarize(s: System, answers: dict[str, dict[str, list[int]]], ref: str, bw: float) -> dict[str, Any]:
    decode = median([NEW_TOKENS / t.decode_s for t in s.runs])
    context = bandwidth.mean_decode_context(PROMPT_TOKENS, NEW_TOKENS)
    mine, theirs = answers[s.name], answers[ref]
    return {
        "name": s.name,
        "precision": s.precision,
        "weights": s.weights,
        "prefill_tokens_per_second": median([PROMPT_TOKENS / t.prefill_s for t in s.runs]),
        "decode_tokens_per_second": decode,
        # The best run estimates the speed without the machine's other work (which only slows runs).
        "best_prefill_tokens_per_second": max(PROMPT_TOKENS / t.prefill_s for t in s.runs),
        "best_decode_tokens_per_second": max(NEW_TOKENS / t.decode_s for t in s.runs),
        "prefill_runs_s": [t.prefill_s for t in s.runs],
        "decode_runs_s": [t.decode_s for t in s.runs],
        "bound": bandwidth.decode_bound(bw, s.bytes_per_token, s.kv_bytes_per_position, context, decode),
        "agree_prompt_tokens": agreement(mine["prompt"], theirs["prompt"]),
        "agree_chat_tokens": agreement(mine["chat"], theirs["chat"]),
        "greedy_tokens": mine,
    }


def same_precision_pairs(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every (vinci-edge engine, peer) pair whose weights have the same bits, with the ratios."""
    ours = [r for r in results if r["name"].startswith("vinci-edge")]
    peers = [r for r in results if not r["name"].startswith("vinci-edge")]
    return [
        {
            "ours": a["name"],
            "peer": b["name"],
            "precision": a["precision"],
            "prefill_ratio": a["prefill_tokens_per_second"] / b["prefill_tokens_per_second"],
            "decode_ratio": a["decode_tokens_per_second"] / b["decode_tokens_per_second"],
        }
        for a in ours
        for b in peers
        if a["precision"] == b["precision"]
    ]


def measure(systems: list[System], prompt: list[int], chat: list[int], runs: int, skipped: dict[str, str]):
    """Greedy answers of every system, then `runs` timed rounds; returns the answers and the best read
    bandwidth measured after each round (other work on a shared machine only ever lowers it)."""
    answers, bandwidths = {}, []
    for s in list(systems):
        try:
            answers[s.name] = greedy_answers(s, prompt, chat)
        except Exception as exc:
            skipped[s.name] = f"{type(exc).__name__}: {exc}"
            say(f"skipping {s.name}: {skipped[s.name]}")
            systems.remove(s)
    for i in range(runs):
        for s in systems:  # round-robin: background load on a shared machine hits every system alike
            t = s.run(prompt, NEW_TOKENS, False)
            s.runs.append(t)
            say(
                f"run {i + 1}/{runs} {s.name}: prefill {PROMPT_TOKENS / t.prefill_s:.0f} tok/s, "
                f"decode {NEW_TOKENS / t.decode_s:.1f} tok/s"
            )
        bandwidths.append(bandwidth.measure_read_bandwidth(repeats=3))
        say(f"read bandwidth after round {i + 1}: {bandwidths[-1]['bytes_per_second'] / 1e9:.1f} GB/s")
    return answers, max(bandwidths, key=lambda b: b["bytes_per_second"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--engine", type=Path, action="append", help="another vinci-edge engine (e.g. INT4)")
    args = ap.parse_args()
    print_machine(machine_info(torch_blas=True))

    ckpt = smol_checkpoint()
    engine = engine_for(ckpt, "smol-fp32")
    from vinci_edge.text.tokenizer import TextTokenizer

    tok = TextTokenizer.from_folder(engine / "tokenizer")
    prompt, chat = prompt_ids(tok), chat_ids(tok)

    skipped: dict[str, str] = {}
    makers: list[tuple[str, Callable[[], System]]] = [
        ("vinci-edge", lambda: vinci_system(engine, args.threads, "vinci-edge")),
        ("optimum ORT", lambda: optimum_system(ckpt / "llm", args.threads)),
        ("llama.cpp (xllamacpp)", lambda: llamacpp_system(smollm2_gguf(), args.threads)),
    ]
    for extra in args.engine or []:
        name = f"vinci-edge {extra.name}"
        makers.append((name, lambda e=extra, n=name: vinci_system(e, args.threads, n)))
    systems = [s for name, make in makers if (s := try_system(make, name, skipped)) is not None]

    say(f"{len(prompt)} prompt tokens, {NEW_TOKENS} greedy steps, {args.threads} threads, {args.runs} runs")
    answers, bw = measure(systems, prompt, chat, args.runs, skipped)
    results = [summarize(s, answers, systems[0].name, bw["bytes_per_second"]) for s in systems]
    report = {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "runs": args.runs,
        "prompt_tokens": PROMPT_TOKENS,
        "new_tokens": NEW_TOKENS,
        "bandwidth": bw,
        "systems": results,
        "skipped": skipped,
        "same_precision_pairs": same_precision_pairs(results),
    }
    BENCH.mkdir(parents=True, exist_ok=True)
    (BENCH / "peers.json").write_text(json.dumps(report, indent=2))
    (BENCH / "peers.html").write_text(html_page(report))
    print_report(report)


# ---- output ---------------------------------------------------------------------------------------------
def print_report(r: dict[str, Any]) -> None:
    ref = r["systems"][0]
    print()
    print(
        f"SmolLM2-135M-Instruct, {r['prompt_tokens']}-token prompt, {r['new_tokens']} greedy tokens, "
        f"{r['threads']} threads, median of {r['runs']}; "
        f"read bandwidth {r['bandwidth']['bytes_per_second'] / 1e9:.1f} GB/s"
    )
    cols = ("system", "weights", "prefill tok/s", "decode tok/s", "ours/this", "bound", "% bound", "agree")
    widths = (24, 28, 16, 15, 10, 8, 9, 8)
    print("".join(f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cols, widths))))
    for s in r["systems"]:
        b = s["bound"]
        cells = (
            s["name"],
            s["weights"],
            f"{s['prefill_tokens_per_second']:.0f} ({s['best_prefill_tokens_per_second']:.0f})",
            f"{s['decode_tokens_per_second']:.1f} ({s['best_decode_tokens_per_second']:.1f})",
            f"{ref['decode_tokens_per_second'] / s['decode_tokens_per_second']:.2f}x",
            f"{b['bound_tokens_per_second']:.0f}",
            f"{b['percent_of_bound']:.0f}%",
            f"{s['agree_prompt_tokens']}+{s['agree_chat_tokens']}",
        )
        print("".join(f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths))))
    print(
        "rates: median (best run). ours/this: vinci-edge fp32 median decode rate / this system's.\n"
        f"agree: leading greedy tokens (of {AGREE_TOKENS}) equal to vinci-edge fp32's after the long "
        "prompt + after a chat question.\nbound: bandwidth / (weight + KV bytes read per decode token)."
    )
    if r["same_precision_pairs"]:
        print("Same-precision comparisons:")
        for p in r["same_precision_pairs"]:
            print(
                f"  {p['ours']} vs {p['peer']} ({p['precision']}): prefill {p['prefill_ratio']:.2f}x, "
                f"decode {p['decode_ratio']:.2f}x"
            )
    alone = {s["precision"] for s in r["systems"]} - {p["precision"] for p in r["same_precision_pairs"]}
    if alone:
        print(
            f"Without a same-precision partner: {', '.join(sorted(alone))} "
            "(pass --engine with a quantized engine to pair them)"
        )
    for name, why in r["skipped"].items():
        print(f"skipped {name}: {why}")
    print(f"wrote {BENCH / 'peers.json'} and {BENCH / 'peers.html'}")


def html_page(r: dict[str, Any]) -> str:
    systems = r["systems"]
    prefill = svg.stacked_bars(
        [(s["name"], [("prefill", s["prefill_tokens_per_second"])]) for s in systems],
        "tokens/s (median)",
        f"Prefill, {r['prompt_tokens']}-token prompt",
    )
    decode_rows = []
    for s in systems:
        measured = s["decode_tokens_per_second"]
        headroom = max(s["bound"]["bound_tokens_per_second"] - measured, 0.0)
        decode_rows.append((s["name"], [("measured", measured), ("up to the bandwidth bound", headroom)]))
    decode = svg.stacked_bars(decode_rows, "tokens/s (median)", f"Decode, {r['new_tokens']} greedy tokens")
    rows = "".join(
        f"<tr><td>{s['name']}</td><td>{s['weights']}</td><td>{s['prefill_tokens_per_second']:.0f}</td>"
        f"<td>{s['decode_tokens_per_second']:.1f}</td><td>{s['bound']['percent_of_bound']:.0f}%</td></tr>"
        for s in systems
    )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>vinci-edge vs peers</title></head>'
        "<body style='font-family:sans-serif'><h1>Decoder vs peers: SmolLM2-135M-Instruct</h1>"
        f"<p>{r['machine']}, {r['threads']} threads, median of {r['runs']} runs.</p>"
        f"<figure>{prefill}</figure><figure>{decode}</figure>"
        "<table border=1 cellpadding=4><tr><th>system</th><th>weights</th><th>prefill tok/s</th>"
        f"<th>decode tok/s</th><th>% of bound</th></tr>{rows}</table></body></html>\n"
    )


if __name__ == "__main__":
    main()
