"""What the `vinci-edge quantize` tests (tests/test_quant_*.py) share: the precisions they quantize,
the floors their stage outputs are held to, and the runners and readers they compare with.

The fixtures built on these (the calibration sources, the quantized engines, the reference stage
inputs and outputs) are in conftest.py. Speed: one fp32 engine (the session's tiny_engine), each
precision quantized once per session with 3 calibration requests, the reference stage outputs
computed once.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LICENSE_TEXT = Path("/usr/share/common-licenses/Apache-2.0")
CALIB_SIZE = 3
PROMPT = "What happens in this clip?"
DECODE_STEPS = 6  # teacher-forced decode steps compared after the prefill

MODELOPT = ("int8", "fp8", "int4-awq")
SPECS = {  # name -> --precision
    "int8-dynamic": "int8-dynamic",
    "int8-compute": "int8-compute",
    "int4": "int4",
    "int8": "int8",
    "fp8": "fp8",
    "int4-awq": "int4-awq",
    "mixed": "vision=int8,audio=int8,decoder=int4",
    "int8-sq": "int8",  # + SmoothQuant 0.5
}

# Floors on the cosine similarity to fp32 of every stage output on the real clip, worst row (per
# token / position / logits row), as (towers, decoder). The tiny model has random weights with a
# large init range, harsher than a trained model, and its decoder compounds two layers and a 1024-way
# head, so its floors are lower than the towers'. Measured minima on this machine in brackets. The
# floors catch a broken graph (a wrong scale, zero point or block layout gives cosines far below
# 0.5), not the accuracy goals, which the accuracy report measures on SmolLM2 (perplexity).
# - int8-dynamic: int8 weights per block of 32 AND int8 activations per block: ~2^-8 relative
#   error per value                                             [0.9998 / 0.9991]
# - int8-compute: towers int8 x int8 with one activation scale per call, 7-bit weights; decoder
#   prefill per-token 7-bit activations (--int8-range reduced), decode as int8-dynamic
#                                                               [0.9996 / 0.9977]
# - int8 static: one activation scale per tensor from 3 requests [0.9995 / 0.994, SmoothQuant 0.997]
# - fp8 E4M3: 3 mantissa bits (~2^-4 per value), averaged by the dot products [0.993 / 0.986]
# - int4: 16 levels per block of 32 weights                     [0.987 / 0.890]
# - int4-awq: blocks of 128, i.e. one scale per output channel on these 64-wide layers
#                                                               [0.980 / 0.817]
COSINE_FLOOR = {
    "int8-dynamic": (0.999, 0.995),
    "int8-compute": (0.999, 0.995),
    "int8": (0.998, 0.98),
    "int8-sq": (0.998, 0.98),
    "fp8": (0.98, 0.96),
    "int4": (0.97, 0.80),
    "int4-awq": (0.95, 0.70),
}


def _teacher_tokens(pipe, embeds: np.ndarray, n: int) -> list[int]:
    dec = pipe.decoder
    dec.reset()
    logits = dec.append(embeds)
    out = []
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        logits = dec.append(pipe.text_table[out[-1]][None])
    return out


def stage_outputs(engine: Path, inputs: dict) -> dict[str, np.ndarray]:
    """Every stage's outputs on `inputs` through the runtime's own runners (which honour the
    manifest's ort_optimization); the decoder's are the logits of the prefill and of each
    teacher-forced step, (steps, vocab)."""
    from vinci_edge.runtime.pipeline import Pipeline

    pipe = Pipeline.from_engine(engine)
    out = {}
    for stage, feed in inputs.items():
        if stage == "decoder":
            dec = pipe.decoder
            dec.reset()
            rows = [dec.append(feed["embeds"])]
            rows += [dec.append(pipe.text_table[t][None]) for t in feed["tokens"][:-1]]
            out[stage] = np.stack(rows)
        else:
            got = pipe.runner(stage).run(feed)
            for name, value in got.items():
                out[f"{stage}.{name}"] = value
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Worst cosine similarity over the rows of the last axis (per token / position)."""
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return float(np.min(num / np.maximum(den, 1e-30)))


def _manifest(engine: Path) -> dict:
    return json.loads((engine / "manifest.json").read_text())


def _weight_matmul_names(path: Path) -> set[str]:
    from vinci_edge.quantization import graph as g

    model = g.load(path, weights=False)
    g.name_nodes(model)  # the names the quantizers saw
    return {n.name for n in g.weight_matmuls(model)}
