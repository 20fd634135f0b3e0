"""Fused native stitch (C++ CPU kernel; the CUDA kernel behind host copies where a GPU and cuda-python
are present) against `stitch_numpy`, on an omnivinci-9b-shaped request.

    python benchmarks/bench_stitch.py [--repeats 7] [--json]

The request: 16 frames x 256 tokens of video + 750 audio tokens + ~40 text tokens, D = 3584, MTCT
(shortest, trope_dim 128, max_time 3600) on both video and audio, as the omnivinci-9b preset; fp32 in
and out. Both implementations run in the same process on the same inputs; the times are medians. The
text table has 4096 rows instead of 152064 (the stitch reads ~40 of them; a 2 GB table would only
measure the allocator).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
from common import machine_info, print_machine

from vinci_edge import crte
from vinci_edge.kinds import Kind
from vinci_edge.plan import Plan
from vinci_edge.presets import preset_config
from vinci_edge.stitch import (
    NativeStitch,
    StitchInputs,
    load_library,
    select_stitch,
    stitch_numpy,
    unavailable_reason,
)

FRAMES, TOKENS_PER_FRAME, AUDIO_TOKENS, TEXT_EACH_SIDE, VOCAB = 16, 256, 750, 20, 4096


def make_inputs(seed: int = 0) -> StitchInputs:
    cfg = preset_config("omnivinci-9b")
    dim = cfg.hidden_size
    te_v, te_a = cfg.video_encoder.time, cfg.sound_encoder.time
    rng = np.random.default_rng(seed)
    n_video = FRAMES * TOKENS_PER_FRAME
    frame_times = np.arange(FRAMES, dtype=np.float64) * (30.0 / FRAMES)
    v_times = np.repeat(frame_times, TOKENS_PER_FRAME)
    a_times = (np.arange(AUDIO_TOKENS, dtype=np.float64) + 0.5) * 30.0 / AUDIO_TOKENS
    cols_v = np.tile(np.arange(TOKENS_PER_FRAME), FRAMES)
    rows_v = np.repeat(np.arange(FRAMES), TOKENS_PER_FRAME)
    sv, av, bv = crte.token_coordinates(te_v, v_times, rows_v, FRAMES, cols_v, TOKENS_PER_FRAME)
    sa, aa, ba = crte.token_coordinates(te_a, a_times, np.zeros(AUDIO_TOKENS), 1, np.arange(AUDIO_TOKENS), 1)
    text = rng.integers(0, VOCAB, TEXT_EACH_SIDE)
    sep = np.array([198])
    # text, one TEG segment (video, sep, audio, sep), text
    kind = np.concatenate(
        [np.full(TEXT_EACH_SIDE, Kind.TEXT), np.full(n_video, Kind.VIDEO), [Kind.TEXT]]
        + [np.full(AUDIO_TOKENS, Kind.AUDIO), [Kind.TEXT], np.full(TEXT_EACH_SIDE, Kind.TEXT)]
    ).astype(np.int8)
    src = np.concatenate([text, np.arange(n_video), sep, np.arange(AUDIO_TOKENS), sep, text]).astype(np.int64)
    z1, zt = np.zeros(1), np.zeros(TEXT_EACH_SIDE)
    scale = np.concatenate([zt, sv, z1, sa, z1, zt])
    a = np.concatenate([zt, av, z1, aa, z1, zt])
    b = np.concatenate([zt, bv, z1, ba, z1, zt])
    plan = Plan(kind, src, scale, a, b, np.full(kind.size, np.nan), [])
    return StitchInputs(
        plan=plan,
        text_table=rng.standard_normal((VOCAB, dim), dtype=np.float32),
        banks={
            Kind.VIDEO: rng.standard_normal((n_video, dim), dtype=np.float32),
            Kind.AUDIO: rng.standard_normal((AUDIO_TOKENS, dim), dtype=np.float32),
        },
        tables={
            Kind.VIDEO: crte.rotation_table(te_v),
            Kind.AUDIO: crte.rotation_table(te_a),
            Kind.IMAGE: None,
        },
    )


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: page faults of the output, thread start-up paths
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    print_machine(machine_info(torch_blas=False))

    x = make_inputs()
    n, dim = len(x.plan), x.text_table.shape[1]
    res: dict[str, object] = {"positions": n, "dim": dim, "repeats": args.repeats, "dtype": "float32"}
    res["numpy_s"] = median_seconds(lambda: stitch_numpy(x, np.float32), args.repeats)
    lib = load_library()
    if lib is None:
        res["native"] = f"unavailable: {unavailable_reason()}"
    else:
        ref = stitch_numpy(x, np.float32)
        threads = {1: NativeStitch(lib, 1), 2: NativeStitch(lib, 2), 0: NativeStitch(lib, 0)}
        res["max_abs_diff"] = float(np.abs(threads[0](x, np.float32) - ref).max())
        for t, fn in threads.items():
            res[f"cpp_{t or 'all'}_threads_s"] = median_seconds(lambda fn=fn: fn(x, np.float32), args.repeats)
        buf = np.empty((n, dim), np.float32)
        res["cpp_all_threads_reused_out_s"] = median_seconds(
            lambda: threads[0](x, np.float32, out=buf), args.repeats
        )
        res["hardware_threads"] = lib.hardware_threads
        res["speedup_1_thread"] = res["numpy_s"] / res["cpp_1_threads_s"]
        res["speedup_2_threads"] = res["numpy_s"] / res["cpp_2_threads_s"]
        res["speedup_all_threads"] = res["numpy_s"] / res["cpp_all_threads_s"]
        res["threads_2_vs_1"] = res["cpp_1_threads_s"] / res["cpp_2_threads_s"]
        res["output_GB_per_s_all_threads"] = n * dim * 4 / res["cpp_all_threads_s"] / 1e9
    cuda = select_stitch("cuda")
    if cuda.name == "cuda":  # host -> device copies, kernel, device -> host: what the runtime pays today
        res["cuda_max_abs_diff"] = float(
            np.abs(cuda.stitch(x, np.float32) - stitch_numpy(x, np.float32)).max()
        )
        res["cuda_host_to_device_s"] = median_seconds(lambda: cuda.stitch(x, np.float32), args.repeats)
    else:
        res["cuda"] = cuda.note
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"stitch {n} positions x {dim} (fp32), median of {args.repeats}")
    print(f"  numpy            {res['numpy_s'] * 1e3:8.2f} ms")
    if lib is None:
        print(f"  native           {res['native']}")
        return
    for t in (1, 2, "all"):
        key = f"cpp_{t}_threads_s"
        print(
            f"  cpp {t!s:>3} thread(s) {res[key] * 1e3:8.2f} ms   x{res['numpy_s'] / res[key]:6.1f} vs numpy"
        )
    key = "cpp_all_threads_reused_out_s"
    print(f"  cpp all, out=buf {res[key] * 1e3:8.2f} ms   x{res['numpy_s'] / res[key]:6.1f} vs numpy")
    print(f"  2 threads vs 1: x{res['threads_2_vs_1']:.2f}   max |cpp - numpy| = {res['max_abs_diff']:.3g}")
    if "cuda_host_to_device_s" in res:
        t = res["cuda_host_to_device_s"]
        print(f"  cuda (with copies) {t * 1e3:6.2f} ms   x{res['numpy_s'] / t:6.1f} vs numpy")
    else:
        print(f"  {res['cuda']}")


if __name__ == "__main__":
    main()
