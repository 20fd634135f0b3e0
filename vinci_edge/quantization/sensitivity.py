"""`--keep-fp32 auto`: which decoder layer kinds a static INT8 / FP8 decoder leaves in fp32, measured.

    quantize every linear layer once (ModelOpt, 'max' calibration)
      -> a window of calibration text (seeded, from the calibration texts: never the accuracy
         report's text), teacher-forced through the decoder one token at a time
      -> perplexity of fp32, of the fully quantized graph, and of the quantized graph with each
         layer kind restored to fp32 (graph.restore_fp32: the other layers keep their scales, so
         no re-calibration is needed)
      -> kinds kept greedily, the most helpful first, each step measured, until the perplexity
         change is within the budget (issue 4's goal, 2 %) beyond the window's noise - the upper
         end of its paired 95 % interval (accuracy/stats.py) - or no kind is left that helps

The cost is (2 + kinds + steps) passes over the window of a Q/DQ graph at ONNX Runtime's basic
level, hence a short window. The window is a trade: a 256-token window moves a perplexity change
by several percent against a 1000-token one (the accuracy report's default), so the choice is
judged by the interval, not the point estimate, which kept nothing for SmolLM2's INT8 +
SmoothQuant (see docs/quantization.md, '`--keep-fp32 auto`'). The choice is still a first guess,
re-measured by `quant-report`.
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
from vinci_edge.manifest import DecoderSpec
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


def window_nll(
    path: Path, spec: DecoderSpec, table: np.ndarray, window: list[int], optimization: str
) -> np.ndarray:
    """Per-token NLL of `window` teacher-forced through the decoder graph at `path`."""
    from vinci_edge.quantization.accuracy.stats import token_nll
    from vinci_edge.quantization.accuracy.teacher_forcing import decoder_logits
    from vinci_edge.runtime.backend import SessionSettings
    from vinci_edge.runtime.decoder import OrtDecoder

    dec = OrtDecoder(path, spec, SessionSettings(optimization=optimization), context=len(window) + 1)
    return token_nll(decoder_logits(dec, table, window), np.asarray(window[1:]))


def choose_keep(
    job, qdq: onnx.ModelProto, fp32: onnx.ModelProto, kinds: dict[str, str], optimization: str
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The layer kinds (keys of `kinds`: kind -> node-name suffix) to restore to fp32 in `qdq`, and
    the sweep's record for the manifest. `fp32` is the graph `qdq` was quantized from."""
    from vinci_edge.quantization.accuracy.stats import change_interval
    from vinci_edge.runtime.engine import Engine

    engine_dir = Path(job.src).parent
    spec = job.spec
    table = Engine.load(engine_dir).embed_table()
    record = job.calibration.record["sources"]
    window = sweep_window(engine_dir, record["texts"], record["seed"])
    scratch = job.workdir / "sweep"
    scratch.mkdir(parents=True, exist_ok=True)
    nodes = {n.name for n in qdq.graph.node if n.op_type == "MatMul"}

    job.say(f"{job.stage}: sensitivity sweep over {', '.join(kinds)} on {len(window)} calibration tokens")
    ref = window_nll(job.src, spec, table, window, "all")
    ref_ppl = float(np.exp(ref.mean()))
    job.say(f"{job.stage}: sensitivity, fp32 perplexity {ref_ppl:.3f}")
    trials: dict[tuple[str, ...], dict[str, Any]] = {}

    def measure(keep: tuple[str, ...]) -> dict[str, Any]:
        if keep not in trials:
            names = {n for n in nodes if n.endswith(tuple(kinds[k] for k in keep))}
            path = scratch / "decoder.onnx"
            g.save(g.restore_fp32(qdq, fp32, names) if names else qdq, path)
            nll = window_nll(path, spec, table, window, optimization)
            ppl = float(np.exp(nll.mean()))
            lo, hi = change_interval(ref, nll)
            trials[keep] = {"perplexity": ppl, "change_pct": 100 * (ppl / ref_ppl - 1), "ci95_pct": [lo, hi]}
            kept = ", ".join(keep) or "nothing"
            job.say(
                f"{job.stage}: sensitivity, fp32 kept for [{kept}]: perplexity {ppl:.3f} "
                f"({trials[keep]['change_pct']:+.2f} %, 95 %: {lo:+.1f} to {hi:+.1f})"
            )
        return trials[keep]

    def within(keep: tuple[str, ...]) -> bool:  # beyond the window's noise, not only on average
        return bool(measure(keep)["ci95_pct"][1] <= 100 * BUDGET)

    base = measure(())["perplexity"]
    for k in kinds:
        measure((k,))
    gain = sorted(kinds, key=lambda k: trials[(k,)]["perplexity"])  # most helpful first
    keep: tuple[str, ...] = ()
    for k in gain:
        if within(keep) or trials[(k,)]["perplexity"] >= base:
            break  # within budget, or the remaining kinds do not help on their own
        cand = keep + (k,)
        if measure(cand)["perplexity"] >= trials[keep]["perplexity"]:
            break
        keep = cand
    report = {
        "window_tokens": len(window),
        "budget": BUDGET,
        "criterion": "upper end of the 95 % interval of the perplexity change within the budget",
        "fp32_perplexity": round(ref_ppl, 4),
        "trials": [
            {
                "keep_fp32": list(k),
                "perplexity": round(t["perplexity"], 4),
                "change_pct": round(t["change_pct"], 3),
                "ci95_pct": [round(x, 3) for x in t["ci95_pct"]],
            }
            for k, t in trials.items()
        ],
        "chosen": list(keep),
        "within_budget": within(keep),
    }
    return keep, report
