"""The memory-bandwidth bound of decoding: how fast decode could go if it only had to read memory.

Each decode step reads every weight matrix of the decoder once (a matrix-vector product per matrix)
plus the KV cache up to the current position, so no implementation can beat

    bound tokens/s = sustained read bandwidth / bytes read per token

and "% of bound" says how much of the machine's memory bandwidth decode actually uses. Small models
sit far below it: their decode is bound by per-operator overhead, not by bytes.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from vinci_edge.manifest import DecoderSpec
from vinci_edge.profiling.onnx_weights import read_graph_weights

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "uint8": 1}


def measure_read_bandwidth(
    megabytes: int = 512, repeats: int = 5, threads: int | None = None
) -> dict[str, Any]:
    """Best sustained read bandwidth (bytes/s) of streaming over a `megabytes` array, ~1 s.

    The array is far larger than any cache, and each thread reduces its own slice (numpy releases
    the GIL inside reductions), so the threads read memory concurrently as ONNX Runtime's do. A
    bitwise-OR reduction is used because it is the cheapest full read numpy offers (a float sum does
    more arithmetic per byte and measures lower). The best of one thread and all threads, over
    `repeats` passes each, is reported: a shared machine only ever makes a pass slower.
    """
    threads = threads or os.cpu_count() or 1
    data = np.ones(megabytes * 2**20 // 8, dtype=np.int64)  # written once so every page is resident
    best = {}
    for n in sorted({1, threads}):
        parts = np.array_split(data, n)
        with ThreadPoolExecutor(n) as pool:
            passes = []
            for _ in range(repeats):
                start = time.perf_counter()
                list(pool.map(np.bitwise_or.reduce, parts))
                passes.append(data.nbytes / (time.perf_counter() - start))
        best[n] = max(passes)
    threads_used = max(best, key=best.get)
    return {
        "bytes_per_second": best[threads_used],
        "threads": threads_used,
        "array_bytes": int(data.nbytes),
        "repeats": repeats,
        "by_threads": {str(k): v for k, v in best.items()},
        "method": "numpy bitwise_or.reduce over an int64 array, one slice per thread, best pass",
    }


def decoder_bytes_per_token(decoder_onnx: str | Path) -> dict[str, int]:
    """Weight bytes one decode step reads (all matmul weights incl. the output head, in their
    stored precision) and all initializer bytes, for comparison."""
    weights = read_graph_weights(decoder_onnx)
    return {
        "weight_bytes_per_token": weights.bytes_read_per_call(),
        "initializer_bytes": weights.total_bytes(),
    }


def kv_bytes_per_position(spec: DecoderSpec) -> int:
    """Key + value bytes of one cached position over all layers (decoder spec of the manifest)."""
    return 2 * spec.num_layers * spec.kv_heads * spec.head_dim * DTYPE_BYTES[spec.dtype]


def mean_decode_context(prompt_positions: int, decode_steps: int) -> float:
    """Average positions attention reads over the decode steps: step k (1-based) appends the k-th
    generated token after the prompt, so it attends over prompt + k positions."""
    if decode_steps <= 0:
        return float(prompt_positions)
    return prompt_positions + (decode_steps + 1) / 2


def decode_bound(
    bandwidth: float,
    weight_bytes: int,
    kv_position_bytes: int,
    context: float,
    measured_tokens_per_second: float | None,
) -> dict[str, Any]:
    """The bound tokens/s and how much of it the measured decode rate reaches."""
    kv_bytes = kv_position_bytes * context
    per_token = weight_bytes + kv_bytes
    bound = bandwidth / per_token if per_token > 0 else None
    percent = (
        100.0 * measured_tokens_per_second / bound
        if bound and measured_tokens_per_second is not None
        else None
    )
    return {
        "bandwidth_bytes_per_second": bandwidth,
        "weight_bytes_per_token": weight_bytes,
        "kv_bytes_per_position": kv_position_bytes,
        "context_positions": context,
        "kv_bytes_per_token": kv_bytes,
        "bytes_per_token": per_token,
        "bound_tokens_per_second": bound,
        "measured_tokens_per_second": measured_tokens_per_second,
        "percent_of_bound": percent,
    }
