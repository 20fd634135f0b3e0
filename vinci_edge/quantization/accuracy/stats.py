"""The numbers a variant is judged by: output comparison, perplexity and its interval, agreement.

Stage outputs (vision, audio, image_projector; the decoder's logits), `compare`:
  cosine       mean over output rows (tokens) of the cosine between the variant's and fp32's row
  cosine_min   the worst row
  max_rel_err  max|q - f| / max|f| over the whole output: the worst element error, relative to the
               output's scale (an element-wise relative error explodes where f is near 0)
  rel_l2       ||q - f|| / ||f||

The LLM:
  perplexity       exp(mean NLL) of the predicted tokens, from the teacher-forced logits
                   (teacher_forcing.py)
  perplexity_change_ci95_pct (`change_interval`)
                   a 95 % interval for the change against fp32, from the paired per-token NLL
                   differences (same tokens, same contexts) by batch means over runs of BATCH_TOKENS
                   consecutive tokens (neighbouring tokens' errors are correlated, so a per-token
                   standard error would be too narrow). Why: a single short window's figure moves
                   by several percent with where it starts (see docs/quantization.md, 'Why 1022
                   tokens and an interval').
  answers (`agreement`)
                   prefix_agreement = identical tokens before the first divergence / answer length,
                   token_agreement  = identical tokens at the same index / answer length
                   (after a divergence the contexts differ, so the prefix figure is the stricter one)
"""

from __future__ import annotations

import numpy as np

from vinci_edge.errors import EngineError

BATCH_TOKENS = 32  # batch length of the perplexity change's interval (module docstring)


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """cosine (mean and worst over rows), max_rel_err and rel_l2 of `got` against `ref` (see above)."""
    if ref.shape != got.shape:
        raise EngineError(f"output shapes differ: fp32 {ref.shape}, variant {got.shape}")
    f = np.asarray(ref, np.float64).reshape(-1, ref.shape[-1])
    q = np.asarray(got, np.float64).reshape(-1, got.shape[-1])
    dot = np.einsum("ij,ij->i", f, q)
    norms = np.linalg.norm(f, axis=1) * np.linalg.norm(q, axis=1)
    # Two all-zero rows are identical (cosine 1); one zero row against a non-zero one is not.
    same = (norms == 0) & np.all(f == q, axis=1)
    cos = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), np.where(same, 1.0, 0.0))
    scale = float(np.abs(f).max())
    diff = np.abs(q - f)
    total = float(np.linalg.norm(f))
    return {
        "cosine": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "max_rel_err": float(diff.max() / scale) if scale > 0 else float(diff.max()),
        "rel_l2": float(np.linalg.norm(q - f) / total) if total > 0 else float(np.linalg.norm(q - f)),
    }


def perplexity(logits: np.ndarray, targets: np.ndarray) -> float:
    """exp(mean NLL): row i of `logits` predicts targets[i]."""
    return float(np.exp(token_nll(logits, np.asarray(targets)).mean()))


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each target under its row of logits, in float64."""
    x = np.asarray(logits, np.float64)
    top = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - top).sum(axis=1)) + top[:, 0]
    return lse - x[np.arange(len(targets)), targets]


def change_interval(ref_nll: np.ndarray, got_nll: np.ndarray, batch: int = BATCH_TOKENS) -> list[float]:
    """95 % interval of the perplexity change (%) from paired per-token NLLs, by batch means."""
    delta = np.asarray(got_nll, np.float64) - np.asarray(ref_nll, np.float64)
    n = len(delta) // batch
    if n < 2:  # too few tokens for an interval: the point estimate twice
        mean = float(delta.mean())
        return [float(100.0 * np.expm1(mean))] * 2
    means = delta[: n * batch].reshape(n, batch).mean(axis=1)
    mean, half = float(delta.mean()), 1.96 * float(means.std(ddof=1)) / np.sqrt(n)
    return [float(100.0 * np.expm1(mean - half)), float(100.0 * np.expm1(mean + half))]


def agreement(ref: list[int], got: list[int]) -> dict[str, float]:
    """prefix_agreement, token_agreement and the index of the first divergence (module docstring)."""
    n = max(len(ref), 1)
    prefix = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
    same = sum(a == b for a, b in zip(ref, got))
    return {"prefix_agreement": prefix / n, "token_agreement": same / n, "first_divergence": prefix}
