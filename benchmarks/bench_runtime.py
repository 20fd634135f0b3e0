"""Runtime (ONNX Runtime, torch-free) against the PyTorch reference, same machine, same run.

nano preset, 8 frames + ~8 s of audio, a 32-token answer, CPU, fp32. Prints time to first token and
decode tokens/s of both and their ratios, and writes work-dirs/bench/runtime_vs_reference.json.

    .venv/bin/python benchmarks/bench_runtime.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import platform

from common import BENCH, clip, engine_for, median, nano_checkpoint, say

from vinci_edge.generation import GenerationConfig

QUESTION = "Describe what happens in this clip."


def measure(answer_fn, runs: int) -> dict:
    gen = GenerationConfig(max_new_tokens=32, ignore_eos=True)
    answer_fn(GenerationConfig(max_new_tokens=2, ignore_eos=True))  # warm-up (sessions, caches)
    ttft, tps, prefill, stages = [], [], [], []
    for _ in range(runs):
        a = answer_fn(gen)
        assert len(a.token_ids) == 32
        ttft.append(a.metrics.time_to_first_token)
        tps.append(a.metrics.decode_tokens_per_second())
        prefill.append(a.metrics.totals()["prefill"])
        stages.append(a.metrics.totals())
    return {
        "ttft_s": median(ttft),
        "decode_tok_s": median(tps),
        "prefill_s": median(prefill),
        "prompt_positions": a.prompt_tokens,
        "stages_last_run": stages[-1],
        "token_ids": a.token_ids,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    ckpt = nano_checkpoint()
    engine = engine_for(ckpt, "nano-fp32")
    video = clip()

    from vinci_edge.model.reference import Reference

    say("PyTorch reference (transformers, eager towers, sdpa LLM, fp32)")
    ref = Reference.from_checkpoint(ckpt)
    r = measure(lambda g: ref.answer(QUESTION, g, video=video), args.runs)
    ref = None  # free its memory before the runtime loads

    from vinci_edge.runtime.pipeline import Pipeline

    say("vinci-edge runtime (ONNX Runtime CPU, fp32)")
    pipe = Pipeline.from_engine(engine, cache_chunks=0)  # encode every run, as the reference does
    pipe.warmup()
    o = measure(lambda g: pipe.ask(QUESTION, g, video=video), args.runs)

    result = {
        "machine": platform.processor() or platform.machine(),
        "clip": str(video),
        "runs": args.runs,
        "reference": r,
        "runtime": o,
        "same_tokens": r["token_ids"] == o["token_ids"],
        "ttft_speedup": r["ttft_s"] / o["ttft_s"],
        "decode_speedup": o["decode_tok_s"] / r["decode_tok_s"],
        "stitch": pipe.stitch_name,
    }
    BENCH.mkdir(parents=True, exist_ok=True)
    (BENCH / "runtime_vs_reference.json").write_text(json.dumps(result, indent=2))
    print()
    print(f"nano, {o['prompt_positions']} prompt positions (8 frames + audio, TEG), 32 new tokens, CPU fp32")
    print(f"{'':24}{'reference':>12}{'runtime':>12}{'ratio':>9}")
    print(
        f"{'time to first token (s)':24}{r['ttft_s']:12.2f}{o['ttft_s']:12.2f}{result['ttft_speedup']:8.2f}x"
    )
    print(
        f"{'  of which prefill (s)':24}{r['prefill_s']:12.2f}{o['prefill_s']:12.2f}"
        f"{r['prefill_s'] / o['prefill_s']:8.2f}x"
    )
    print(
        f"{'decode tokens/s':24}{r['decode_tok_s']:12.2f}{o['decode_tok_s']:12.2f}"
        f"{result['decode_speedup']:8.2f}x"
    )
    print(f"same 32 token ids: {result['same_tokens']}")
    for name in ("media_decode", "frame_preprocess", "log_mel", "vision", "audio", "stitch"):
        print(
            f"  {name:18} ref {r['stages_last_run'].get(name, 0):7.3f} s   runtime "
            f"{o['stages_last_run'].get(name, 0):7.3f} s"
        )


if __name__ == "__main__":
    main()
