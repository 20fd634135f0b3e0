"""`--keep-fp32 auto`: which decoder layer kinds a static INT8 / FP8 decoder leaves in fp32, measured.

    quantize every linear layer once (ModelOpt, 'max' calibration)
      -> a window of calibration text (seeded, from the calibration texts: never the accuracy
         report's text), teacher-forced through the decoder one token at a time
      -> perplexity of fp32, of the fully quantized graph, and of the quantized graph with each
         layer kind restored to fp32 (graph.restore_fp32: the other layers keep their scales, so
         no re-calibration is needed)
      -> kinds kept greedily, the most helpful first, each step measured, until the window's
         perplexity is within the budget of fp32's (issue 4's goal, 2 %) or no kind is left that helps

The cost is (2 + kinds + steps) passes over the window of a Q/DQ graph at ONNX Runtime's basic
level: on SmolLM2 at 256 tokens about 50 s each on 2 cores. The window is a trade: on SmolLM2 a
256-token window moves a perplexity change by several percent against a 1000-token one (the
accuracy report's default), so the choice is a cheap first guess, re-measured by `quant-report`.
Kinds rather than single layers: a kind is what the user can name with `--keep-fp32` and what the
manifest reports, and four candidates keep the sweep cheap; the per-kind numbers go in the manifest
(`details.sensitivity`) so a user sees what each kind costs and can overrule the choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from vinci_edge.errors import ConfigError
from vinci_edge.quantization import graph as g

WINDOW_TOKENS = 256
BUDGET = 0.02  # relative perplexity increase the choice aims under (issue 4's INT8 / FP8 goal)


def sweep_window(engine_dir: Path, texts: list[str], seed: int, n: int = WINDOW_TOKENS) -> list[int]:
    """n tokens of one calibration text, at a seeded offset."""
    from vinci_edge.runtime.engine import Engine
    from vinci_edge.text.tokenizer import TextTokenizer

    tok = TextTokenizer.from_folder(Engine.load(engine_dir).tokenizer_dir)
    rng = np.random.default_rng(seed)
    order = [int(i) for i in rng.permutation(len(texts))]
    for i in order:  # the first text (in seeded order) long enough for the window
        ids = tok.encode(Path(texts[i]).read_text(encoding="utf-8"))
        if len(ids) >= n:
            start = int(rng.integers(0, len(ids) - n + 1))
            return ids[start : start + n]
    raise ConfigError(
        f"--keep-fp32 auto needs a calibration text of at least {n} tokens",
        hint="pass a longer --calib-text, or name the layers to keep (--keep-fp32 down_proj)",
    )


def window_perplexity(
    path: Path, spec: dict[str, Any], table: np.ndarray, window: list[int], optimization: str
) -> float:
    """Perplexity of `window` teacher-forced through the decoder graph at `path`."""
    from vinci_edge.runtime.backend import SessionSettings
    from vinci_edge.runtime.decoder import OrtDecoder

    dec = OrtDecoder(path, spec, SessionSettings(optimization=optimization), context=len(window) + 1)
    nll = 0.0
    for tok, nxt in zip(window[:-1], window[1:]):
        logits = dec.append(np.asarray(table[tok], np.float32)[None]).astype(np.float64)
        top = logits.max()
        nll += top + np.log(np.exp(logits - top).sum()) - logits[nxt]
    del dec
    return float(np.exp(nll / (len(window) - 1)))


def choose_keep(
    job, qdq: onnx.ModelProto, fp32: onnx.ModelProto, kinds: dict[str, str], optimization: str
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The layer kinds (keys of `kinds`: kind -> node-name suffix) to restore to fp32 in `qdq`, and
    the sweep's record for the manifest. `fp32` is the graph `qdq` was quantized from."""
    from vinci_edge.runtime.engine import Engine

    engine_dir = Path(job.src).parent
    spec = job.spec
    table = Engine.load(engine_dir).embed_table()
    record = job.calibration.record["sources"]
    window = sweep_window(engine_dir, record["texts"], record["seed"])
    scratch = job.workdir / "sweep"
    scratch.mkdir(parents=True, exist_ok=True)
    nodes = {n.name for n in qdq.graph.node if n.op_type == "MatMul"}

    def measure(keep: tuple[str, ...]) -> float:
        names = {n for n in nodes if n.endswith(tuple(kinds[k] for k in keep))} if keep else set()
        path = scratch / "decoder.onnx"
        g.save(g.restore_fp32(qdq, fp32, names) if names else qdq, path)
        ppl = window_perplexity(path, spec, table, window, optimization)
        kept = ", ".join(keep) or "nothing"
        job.say(f"{job.stage}: sensitivity, fp32 kept for [{kept}]: perplexity {ppl:.3f}")
        return ppl

    job.say(f"{job.stage}: sensitivity sweep over {', '.join(kinds)} on {len(window)} calibration tokens")
    ref = window_perplexity(job.src, spec, table, window, "all")
    job.say(f"{job.stage}: sensitivity, fp32 perplexity {ref:.3f}")
    trials: dict[tuple[str, ...], float] = {(): measure(())}
    for k in kinds:
        trials[(k,)] = measure((k,))
    gain = sorted(kinds, key=lambda k: trials[(k,)])  # most helpful first
    keep: tuple[str, ...] = ()
    for k in gain:
        if trials[keep] <= ref * (1 + BUDGET) or trials[(k,)] >= trials[()]:
            break  # within budget, or the remaining kinds do not help on their own
        cand = keep + (k,)
        if cand not in trials:
            trials[cand] = measure(cand)
        if trials[cand] >= trials[keep]:
            break
        keep = cand
    report = {
        "window_tokens": len(window),
        "budget": BUDGET,
        "fp32_perplexity": round(ref, 4),
        "trials": [{"keep_fp32": list(k), "perplexity": round(p, 4)} for k, p in trials.items()],
        "chosen": list(keep),
        "within_budget": trials[keep] <= ref * (1 + BUDGET),
    }
    return keep, report
