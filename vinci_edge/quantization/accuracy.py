"""What a quantized engine costs in accuracy: every stage of a variant against the fp32 engine.

    fp32 engine ──┬─ tower inputs from real media (Pipeline.prepare: frames, mel chunks, image tiles)
                  │    vision / audio / image_projector outputs       ─┐
                  ├─ fixed windows of real English text                │  computed once
                  │    teacher-forced logits through OrtDecoder        │
                  └─ greedy answers to real prompts (Pipeline.ask)    ─┘
    each variant: the same inputs through its own stages -> the numbers below

Stage outputs (vision, audio, image_projector; the decoder's logits):
  cosine       mean over output rows (tokens) of the cosine between the variant's and fp32's row
  cosine_min   the worst row
  max_rel_err  max|q - f| / max|f| over the whole output: the worst element error, relative to the
               output's scale (an element-wise relative error explodes where f is near 0)
  rel_l2       ||q - f|| / ||f||
Each tower stage gets the fp32 inputs, so its numbers are that stage's own error, not the towers'
errors compounded. The decoder is compared on the same token windows, position by position.

The LLM:
  perplexity       exp(mean NLL) of the text windows' tokens, each window teacher-forced one
                   position at a time from an empty KV cache through the runtime's OrtDecoder (the
                   decode path every answer token takes)
  perplexity_change_ci95_pct
                   a 95 % interval for the change against fp32, from the paired per-token NLL
                   differences (same tokens, same contexts) by batch means over runs of BATCH_TOKENS
                   consecutive tokens (neighbouring tokens' errors are correlated, so a per-token
                   standard error would be too narrow). Why: a single short window's figure moves
                   by several percent with where it starts (see docs/quantization.md, 'Why 1022
                   tokens and an interval').
  top1_agreement   fraction of window positions where the variant's argmax equals fp32's
  answers          greedy answers of `answer_tokens` tokens (EOS ignored, so every answer has the
                   same length) to real prompts through Pipeline.ask, prefill included:
                   prefix_agreement = identical tokens before the first divergence / answer length,
                   token_agreement  = identical tokens at the same index / answer length
                   (after a divergence the contexts differ, so the prefix figure is the stricter one)

Everything runs through the runtime's own classes (Pipeline, OrtStage, OrtDecoder) with the
optimisation level each stage's manifest asks for: what is measured is what ships.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vinci_edge.errors import ConfigError, EngineError, MediaError
from vinci_edge.progress import Progress, silent

TOWERS = ("vision", "audio", "image_projector")
LICENSES = Path("/usr/share/common-licenses")
DEFAULT_TEXT = LICENSES / "GPL-3"  # left out of the default calibration text (calibration.py)
DEFAULT_VIDEO = Path("/usr/share/forensics-samples/original-files/movie2/movie-hello.mp4")
DEFAULT_AUDIO = Path("/usr/share/sounds/alsa/Front_Center.wav")
DEFAULT_IMAGE = Path("/usr/share/doc/opencv-doc/examples/data/fruits.jpg")
# Perplexity goals of the issue, by the decoder's precision: INT8 / FP8 within 2 %, INT4 within 8 %.
PERPLEXITY_GOALS = {
    "int8": 2.0,
    "int8-dynamic": 2.0,
    "fp8": 2.0,
    "int4": 8.0,
    "int4-awq": 8.0,
}
BATCH_TOKENS = 32  # batch length of the perplexity change's interval (module docstring)
FRAME_BATCH = 8  # as the runtime's MediaEncoders
CHUNK_BATCH = 4


@dataclass
class Prompt:
    question: str
    media: str = "text"  # text | video | audio | image: which of the settings' files goes with it


DEFAULT_PROMPTS = (
    Prompt("Describe what happens in this clip.", "video"),
    Prompt("What do you hear in this recording?", "audio"),
    Prompt("Explain in two sentences what free software is and why it matters."),
    Prompt("What is the capital of France, and what is it famous for?"),
    Prompt("Write a short poem about the sea."),
)


@dataclass
class AccuracySettings:
    """What the measurements run on. Files left None are found on the machine (Debian packages)."""

    text: Path | None = None
    text_tokens: int = 512  # per window
    text_windows: int = 2  # consecutive windows, each from an empty cache
    text_offset: int = 0  # first token of the first window
    answer_tokens: int = 32
    video: Path | None = None
    audio: Path | None = None
    image: Path | None = None
    num_frames: int | None = None  # frames per video request (None: the model's default)
    prompts: tuple[Prompt, ...] = DEFAULT_PROMPTS
    decoder: bool = True  # False: towers only (e.g. a random-weight model, where perplexity is noise)

    def resolved(self) -> AccuracySettings:
        """Defaults filled in and every file checked, before any engine is loaded."""
        out = AccuracySettings(**{**asdict(self), "prompts": tuple(self.prompts)})
        if out.text is None and self.decoder:
            out.text = DEFAULT_TEXT if DEFAULT_TEXT.is_file() else _shipped_text()
        for name, default in (("video", DEFAULT_VIDEO), ("audio", DEFAULT_AUDIO), ("image", DEFAULT_IMAGE)):
            if getattr(out, name) is None and default.is_file():
                setattr(out, name, default)
        if out.text_tokens < 8:
            raise ConfigError(f"--tokens {out.text_tokens}: perplexity needs a window of 8 tokens or more")
        if out.text_windows < 1:
            raise ConfigError(f"--windows {out.text_windows} must be at least 1")
        if out.answer_tokens < 1:
            raise ConfigError(f"--answer-tokens {out.answer_tokens} must be at least 1")
        if out.text_offset < 0:
            raise ConfigError(f"--text-offset {out.text_offset} must not be negative")
        for name in ("video", "audio", "image"):
            path = getattr(out, name)
            if path is not None and not Path(path).is_file():
                raise MediaError(f"--{name} {path}: file not found", hint="check the path")
        if out.text is not None:
            read_text(Path(out.text))  # raises MediaError when missing or not text
        return out

    def record(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("text", "video", "audio", "image"):
            d[k] = None if d[k] is None else str(d[k])
        d["prompts"] = [asdict(p) for p in self.prompts]
        return d


def _shipped_text() -> Path:
    from vinci_edge.text.english_corpus import __file__ as corpus

    return Path(corpus)


def read_text(path: Path) -> str:
    if not path.is_file():
        raise MediaError(f"text file {path} does not exist", hint="pass plain English text with --text")
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise MediaError(
            f"{path} cannot be read as UTF-8 text ({exc})", hint="pass a plain-text file to --text"
        ) from exc
    if len(text.split()) < 16:
        raise MediaError(f"{path} holds too little text to measure perplexity on", hint="pass a longer file")
    return text


# --------------------------------------------------------------------------------------------------
# Numbers


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


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each target under its row of logits, in float64."""
    x = np.asarray(logits, np.float64)
    top = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - top).sum(axis=1)) + top[:, 0]
    return lse - x[np.arange(len(targets)), targets]


def perplexity(logits: np.ndarray, targets: np.ndarray) -> float:
    """exp(mean NLL): row i of `logits` predicts targets[i]."""
    return float(np.exp(token_nll(logits, np.asarray(targets)).mean()))


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
    n = max(len(ref), 1)
    prefix = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
    same = sum(a == b for a, b in zip(ref, got))
    return {"prefix_agreement": prefix / n, "token_agreement": same / n, "first_divergence": prefix}


# --------------------------------------------------------------------------------------------------
# Inputs, prepared once by the fp32 engine's runtime


@dataclass
class Inputs:
    """Stage feeds (lists of ONNX feeds per tower stage) and the token windows."""

    towers: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)
    described: dict[str, str] = field(default_factory=dict)  # stage -> what the feeds are
    windows: list[list[int]] = field(default_factory=list)

    @property
    def targets(self) -> np.ndarray:
        """The predicted tokens, in the order of the logits rows: each window but its first token."""
        return np.concatenate([np.asarray(w[1:]) for w in self.windows])


def text_windows(tokenizer, text: str, n: int, count: int, offset: int) -> list[list[int]]:
    """`count` consecutive windows of n tokens from token `offset` on."""
    ids = tokenizer.encode(text)
    need = offset + n * count
    if len(ids) < need:
        raise MediaError(
            f"the text has {len(ids)} tokens; {count} windows of {n} from {offset} need {need}",
            hint="pass a longer --text or fewer / smaller windows (--windows, --tokens, --text-offset)",
        )
    return [ids[offset + k * n : offset + (k + 1) * n] for k in range(count)]


def prepare_inputs(pipe, settings: AccuracySettings, say: Progress) -> Inputs:
    """Tower feeds from real media through the fp32 pipeline's own preprocessing."""
    from vinci_edge import metrics as m
    from vinci_edge.runtime.s2_merge import merge_image_features

    out = Inputs()
    stages = pipe.engine.stages
    if "vision" in stages and settings.video is not None:
        req = pipe.prepare("x", metrics=m.Metrics(), video=settings.video, num_frames=settings.num_frames)
        frames = req.frames
        out.towers["vision"] = _batches("pixel_values", frames, FRAME_BATCH)
        out.described["vision"] = f"{frames.shape[0]} frames of {Path(settings.video).name}"
        say(f"inputs: {out.described['vision']}")
    if "audio" in stages and pipe.cfg.has_sound:
        # The clip's soundtrack (what a video request feeds the audio stage) and the audio file.
        chunks, names = [], []
        for kind, src in (("video", settings.video), ("audio", settings.audio)):
            if src is None:
                continue
            req = pipe.prepare("x", metrics=m.Metrics(), **{kind: src}, num_frames=settings.num_frames)
            if req.mel_chunks is not None:
                chunks.append(req.mel_chunks)
                names.append(f"{req.mel_chunks.shape[0]} of {Path(src).name}")
        if chunks:
            out.towers["audio"] = _batches("mel", np.concatenate(chunks), CHUNK_BATCH)
            out.described["audio"] = f"mel chunks: {' + '.join(names)}"
            say(f"inputs: {out.described['audio']}")
    if "image_projector" in stages and "vision" in stages and settings.image is not None:
        req = pipe.prepare("x", metrics=m.Metrics(), image=settings.image)
        im = req.images[0]
        if im.block_size is not None:  # dynamic S2: the projector sees merged fp32 vision features
            vision = pipe.runner("vision")
            feats = np.concatenate(
                [
                    vision.run({"pixel_values": im.pixels[i : i + FRAME_BATCH]}, ["features"])["features"]
                    for i in range(0, im.pixels.shape[0], FRAME_BATCH)
                ]
            )
            blocks, _ = merge_image_features(
                feats, pipe.cfg.s2_scales, im.block_size, pipe.cfg.s2_resize_output_to_scale_idx
            )
            out.towers["image_projector"] = [{"features": blocks}]
            out.described["image_projector"] = (
                f"{blocks.shape[0]} S2 blocks of {Path(settings.image).name} (fp32 vision features)"
            )
            say(f"inputs: {out.described['image_projector']}")
    if settings.decoder and "decoder" in stages:
        text = read_text(Path(settings.text))
        out.windows = text_windows(
            pipe.tokenizer, text, settings.text_tokens, settings.text_windows, settings.text_offset
        )
        out.described["decoder"] = (
            f"{len(out.windows)} x {settings.text_tokens} tokens of {Path(settings.text).name}"
            f" from token {settings.text_offset}"
        )
    return out


def _batches(name: str, x: np.ndarray, batch: int) -> list[dict[str, np.ndarray]]:
    return [{name: x[i : i + batch]} for i in range(0, x.shape[0], batch)]


# --------------------------------------------------------------------------------------------------
# Running one engine


@dataclass
class Outputs:
    """What one engine produced on the inputs (kept for fp32, compared for the variants)."""

    towers: dict[str, np.ndarray] = field(default_factory=dict)
    logits: np.ndarray | None = None  # (predicted tokens, vocab): rows in the order of Inputs.targets
    answers: list[list[int]] = field(default_factory=list)


def run_engine(pipe, inputs: Inputs, settings: AccuracySettings, label: str, say: Progress) -> Outputs:
    out = Outputs()
    for stage, feeds in inputs.towers.items():
        runner = pipe.runner(stage)
        out.towers[stage] = np.concatenate([runner.run(f, ["tokens"])["tokens"] for f in feeds])
        say(f"{label}: {stage} run on {inputs.described[stage]}")
    if inputs.windows:
        out.logits = np.concatenate(
            [
                teacher_forced_logits(pipe, w, f"{label} window {k + 1}/{len(inputs.windows)}", say)
                for k, w in enumerate(inputs.windows)
            ]
        )
        out.answers = greedy_answers(pipe, settings, label, say)
    return out


def teacher_forced_logits(pipe, window: list[int], label: str, say: Progress) -> np.ndarray:
    """The runtime decoder's logits over the window (decoder_logits), with progress."""
    n = len(window) - 1
    step = max(1, len(window) // 4)

    def progress(i: int) -> None:
        if i % step == 0:
            say(f"{label}: perplexity window {i}/{n} tokens")

    return decoder_logits(pipe.decoder, pipe.text_table, window, progress)


def decoder_logits(
    decoder, table: np.ndarray, window: list[int], progress: Callable[[int], None] | None = None
) -> np.ndarray:
    """Each token of the window (its row of the embedding `table`) appended to the decoder's KV
    cache in turn, from empty; row i of the result, the logits after token i, predicts token i + 1.
    `progress(i)` is called after i tokens."""
    if len(window) > decoder.context:
        raise ConfigError(
            f"a window of {len(window)} tokens exceeds the decoder context ({decoder.context})",
            hint="pass a smaller --tokens",
        )
    decoder.reset()
    rows = np.empty((len(window) - 1, decoder.spec["vocab_size"]), np.float32)
    for i, tok in enumerate(window[:-1]):
        rows[i] = decoder.append(table[tok][None])  # copied: append returns a view of its buffer
        if progress is not None:
            progress(i + 1)
    decoder.reset()
    return rows


def greedy_answers(pipe, settings: AccuracySettings, label: str, say: Progress) -> list[list[int]]:
    from vinci_edge.generation import GenerationConfig

    gen = GenerationConfig(max_new_tokens=settings.answer_tokens, ignore_eos=True)
    answers = []
    for k, p in enumerate(_usable_prompts(pipe, settings)):
        media = _media_of(p, settings)
        ans = pipe.ask(p.question, gen, **media)
        answers.append(list(ans.token_ids))
        say(f"{label}: answer {k + 1} ({p.media}) {len(ans.token_ids)} tokens")
    return answers


def _media_of(p: Prompt, settings: AccuracySettings) -> dict[str, Any]:
    if p.media == "text":
        return {}
    media: dict[str, Any] = {p.media: getattr(settings, p.media)}
    if p.media == "video" and settings.num_frames:
        media["num_frames"] = settings.num_frames
    return media


def _usable_prompts(pipe, settings: AccuracySettings) -> list[Prompt]:
    """Prompts whose media file is there and whose stage the engine has (the same for every variant,
    since variants have the fp32 engine's stages)."""
    stages = pipe.engine.stages

    def usable(p: Prompt) -> bool:
        if p.media == "text":
            return True
        if getattr(settings, p.media) is None:
            return False
        if p.media == "audio":
            return "audio" in stages and pipe.cfg.has_sound
        return "vision" in stages  # video, image

    return [p for p in settings.prompts if usable(p)]


# --------------------------------------------------------------------------------------------------
# Engines and sizes


def load_manifest(folder: Path) -> dict[str, Any]:
    from vinci_edge.runtime.engine import Engine

    return Engine.load(folder).manifest


def precisions_of(manifest: dict[str, Any]) -> dict[str, dict[str, str]]:
    """stage -> {precision, method} as the manifest records it (fp32 for an export)."""
    rec = manifest.get("precision", {})
    out = {}
    for stage in manifest["stages"]:
        r = rec.get(stage, {})
        out[stage] = {
            "precision": r.get("precision") or manifest["stages"][stage].get("precision") or "fp32",
            "method": r.get("method", "none"),
        }
    return out


def stage_bytes(folder: Path, file: str) -> int:
    """Bytes on disk of a stage: the graph plus its external data."""
    path = Path(folder) / file
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def engine_sizes(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    stages = {s: stage_bytes(folder, e["file"]) for s, e in manifest["stages"].items()}
    total = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    return {"stages": stages, "stage_bytes": sum(stages.values()), "total_bytes": total}


def _manifest_sha(folder: Path) -> str:
    import hashlib

    from vinci_edge.export.manifest import MANIFEST

    return hashlib.sha256((Path(folder) / MANIFEST).read_bytes()).hexdigest()


def check_engines(fp32: Path, variants: list[Path]) -> dict[str, Any]:
    """Refuse, before anything runs, a reference that is not fp32 or a variant of another model."""
    ref = load_manifest(fp32)
    quantized = {s: p for s, p in precisions_of(ref).items() if p["precision"] != "fp32"}
    if "quantization" in ref or quantized:
        raise EngineError(
            f"--engine {fp32} is a quantized engine; the reference must be the fp32 export",
            hint="pass the folder `vinci-edge export` wrote as --engine, and quantized ones as --variant",
        )
    for v in variants:
        man = load_manifest(v)
        if man["model_id"] != ref["model_id"]:
            raise EngineError(
                f"--variant {v} holds another model ({man['model_id']}) than --engine ({ref['model_id']})",
                hint="pass variants quantized from the --engine folder",
            )
        if set(man["stages"]) != set(ref["stages"]):
            raise EngineError(
                f"--variant {v} has stages {sorted(man['stages'])}, --engine has {sorted(ref['stages'])}",
                hint="quantize the whole fp32 engine (stages not quantized are copied)",
            )
    return ref


# --------------------------------------------------------------------------------------------------
# The report


def measure(
    fp32: str | Path,
    variants: list[str | Path],
    settings: AccuracySettings | None = None,
    progress: Progress | None = None,
    names: list[str] | None = None,
    threads: int = 0,
) -> dict[str, Any]:
    """The accuracy report (a JSON-ready dict, keys in docs/quantization.md) of each variant against
    the fp32 engine. `names` labels the variants (default: folder names)."""
    from vinci_edge import __version__
    from vinci_edge.runtime.pipeline import Pipeline

    say = progress or silent
    fp32 = Path(fp32)
    folders = [Path(v) for v in variants]
    labels = list(names) if names else [f.name for f in folders]
    if len(labels) != len(folders):
        raise ConfigError("one name per variant is needed")
    settings = (settings or AccuracySettings()).resolved()
    ref_manifest = check_engines(fp32, folders)
    ref_sha = _manifest_sha(fp32)

    pipe = Pipeline.from_engine(fp32, threads=threads)
    inputs = prepare_inputs(pipe, settings, say)
    if settings.decoder and not inputs.windows:
        settings.decoder = False  # an engine without a decoder: towers only
    ref = run_engine(pipe, inputs, settings, "fp32", say)
    del pipe
    ref_sizes = engine_sizes(fp32, ref_manifest)
    ref_ppl = perplexity(ref.logits, inputs.targets) if ref.logits is not None else None

    report: dict[str, Any] = {
        "schema": "vinci-edge/quant-accuracy/1",
        "vinci_edge": __version__,
        "fp32_engine": str(fp32.resolve()),
        "model_id": ref_manifest["model_id"],
        "settings": settings.record(),
        "inputs": inputs.described,
        "fp32": {
            "perplexity": ref_ppl,
            "predicted_tokens": int(len(inputs.targets)) if inputs.windows else 0,
            "size": ref_sizes,
        },
        "variants": [],
    }
    for label, folder in zip(labels, folders):
        say(f"{label}: measuring {folder}")
        manifest = load_manifest(folder)
        pipe = Pipeline.from_engine(folder, threads=threads)
        got = run_engine(pipe, inputs, settings, label, say)
        del pipe
        report["variants"].append(
            _variant_entry(label, folder, manifest, ref, got, inputs, ref_ppl, ref_sizes, ref_sha)
        )
        say(f"{label}: done")
    return report


def _variant_entry(
    label: str,
    folder: Path,
    manifest: dict[str, Any],
    ref: Outputs,
    got: Outputs,
    inputs: Inputs,
    ref_ppl: float | None,
    ref_sizes: dict[str, Any],
    ref_sha: str,
) -> dict[str, Any]:
    prec = precisions_of(manifest)
    sizes = engine_sizes(folder, manifest)
    stages: dict[str, Any] = {}
    for stage in manifest["stages"]:
        entry: dict[str, Any] = {
            **prec[stage],
            "bytes": sizes["stages"][stage],
            "size_ratio": sizes["stages"][stage] / ref_sizes["stages"][stage],
        }
        if stage in ref.towers:
            entry.update(compare(ref.towers[stage], got.towers[stage]))
            entry["inputs"] = inputs.described[stage]
        elif stage == "decoder" and ref.logits is not None:
            entry.update(compare(ref.logits, got.logits))
            entry["inputs"] = inputs.described["decoder"]
            entry["compared"] = "logits"
        stages[stage] = entry

    llm = None
    if ref.logits is not None:
        targets = inputs.targets
        ppl = perplexity(got.logits, targets)
        per = [agreement(a, b) for a, b in zip(ref.answers, got.answers)]
        llm = {
            "perplexity": ppl,
            "perplexity_change_pct": 100.0 * (ppl / ref_ppl - 1.0),
            "perplexity_change_ci95_pct": change_interval(
                token_nll(ref.logits, targets), token_nll(got.logits, targets)
            ),
            "top1_agreement": float(np.mean(ref.logits.argmax(1) == got.logits.argmax(1))),
            "answers": {
                "count": len(per),
                "tokens": len(ref.answers[0]) if ref.answers else 0,
                "identical": sum(a == b for a, b in zip(ref.answers, got.answers)),
                "prefix_agreement": float(np.mean([p["prefix_agreement"] for p in per])) if per else None,
                "token_agreement": float(np.mean([p["token_agreement"] for p in per])) if per else None,
                "per_prompt": per,
            },
        }
    decoder_precision = prec.get("decoder", {}).get("precision", "fp32")
    limit = PERPLEXITY_GOALS.get(decoder_precision)
    goal = None
    if llm is not None and limit is not None:
        goal = {
            "metric": "perplexity_change_pct",
            "limit_pct": limit,
            "met": bool(abs(llm["perplexity_change_pct"]) <= limit),
            # whether the whole interval is within the limit: "met" beyond the measurement's noise
            "met_beyond_noise": bool(max(abs(x) for x in llm["perplexity_change_ci95_pct"]) <= limit),
        }
    source = manifest.get("quantization", {}).get("source_manifest_sha256")
    return {
        "name": label,
        "engine": str(Path(folder).resolve()),
        "precision": {s: p["precision"] for s, p in prec.items()},
        "quantization": manifest.get("quantization"),
        "from_this_fp32": source == ref_sha if source else None,
        "stages": stages,
        "llm": llm,
        "size": {**sizes, "ratio_vs_fp32": sizes["stage_bytes"] / ref_sizes["stage_bytes"]},
        "goal": goal,
        "error": None,
    }


def failed_entry(label: str, folder: str | Path, precision: str, error: str) -> dict[str, Any]:
    """A variant that could not be built or measured: listed, with the error, never left out."""
    return {
        "name": label,
        "engine": str(folder),
        "precision": {"requested": precision},
        "quantization": None,
        "from_this_fp32": None,
        "stages": {},
        "llm": None,
        "size": None,
        "goal": None,
        "error": error,
    }
