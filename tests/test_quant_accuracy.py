"""The quantization accuracy report: its numbers, its files and `vinci-edge quant-report`.

On the tiny engine and an int4 variant of it (no calibration needed, ~1 s to make). Speed is not
tested here: benchmarks/bench_quant.py measures it.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from vinci_edge.cli import run as cli_run
from vinci_edge.errors import ConfigError, EngineError, MediaError
from vinci_edge.quantization.accuracy.engines import check_engines
from vinci_edge.quantization.accuracy.inputs import text_windows
from vinci_edge.quantization.accuracy.measure import measure
from vinci_edge.quantization.accuracy.record import failed_entry
from vinci_edge.quantization.accuracy.settings import AccuracySettings, read_text
from vinci_edge.quantization.accuracy.stats import agreement, change_interval, compare, perplexity
from vinci_edge.quantization.accuracy.teacher_forcing import teacher_forced_logits
from vinci_edge.quantization.report import markdown, svg_plot, write_report

TOKENS = 48
ANSWER_TOKENS = 6
# Keys docs/quantization.md documents; the tests hold the writer to them.
REPORT_KEYS = {"schema", "vinci_edge", "fp32_engine", "model_id", "settings", "inputs", "fp32", "variants"}
VARIANT_KEYS = {
    "name",
    "engine",
    "precision",
    "quantization",
    "from_this_fp32",
    "stages",
    "llm",
    "size",
    "goal",
    "error",
}
STAGE_KEYS = {"precision", "method", "bytes", "size_ratio", "cosine", "cosine_min", "max_rel_err", "rel_l2"}
LLM_KEYS = {"perplexity", "perplexity_change_pct", "perplexity_change_ci95_pct", "top1_agreement", "answers"}


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """A real PNG (decoded by Pillow like any image): wide, so dynamic S2 tiles it into blocks."""
    from PIL import Image

    y, x = np.mgrid[0:240, 0:400]
    rgb = np.stack([x * 255 // 400, y * 255 // 240, (x + y) % 256], -1).astype(np.uint8)
    path = tmp_path_factory.mktemp("media") / "gradient.png"
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture(scope="module")
def int4_engine(tiny_engine, tmp_path_factory) -> Path:
    from vinci_edge.quantization.quantize import quantize_engine

    out = tmp_path_factory.mktemp("quant") / "tiny-int4"
    quantize_engine(tiny_engine, out, "int4")
    return out


@pytest.fixture(scope="module")
def settings(clip, wav, image) -> AccuracySettings:
    return AccuracySettings(
        text_tokens=TOKENS,
        text_windows=2,
        answer_tokens=ANSWER_TOKENS,
        video=clip,
        audio=wav,
        image=image,
        num_frames=4,
    )


@pytest.fixture(scope="module")
def report(tiny_engine, int4_engine, settings) -> dict:
    """fp32 against itself (the control) and against int4, in one measurement."""
    lines: list[str] = []
    out = measure(tiny_engine, [tiny_engine, int4_engine], settings, lines.append, names=["same", "int4"])
    assert any("perplexity window" in s for s in lines)  # progress is reported
    return out


def test_fp32_against_itself_is_exact(report):
    same = report["variants"][0]
    assert set(same["stages"]) == {"vision", "audio", "image_projector", "decoder"}
    for stage, s in same["stages"].items():
        assert s["precision"] == "fp32", stage
        assert s["cosine"] == pytest.approx(1.0, abs=1e-12), stage
        assert s["cosine_min"] == pytest.approx(1.0, abs=1e-12), stage
        assert s["max_rel_err"] == 0.0, stage
        assert s["rel_l2"] == 0.0, stage
    llm = same["llm"]
    assert llm["perplexity"] == report["fp32"]["perplexity"]
    assert llm["perplexity_change_pct"] == 0.0
    assert llm["perplexity_change_ci95_pct"] == [0.0, 0.0]
    assert report["fp32"]["predicted_tokens"] == 2 * (TOKENS - 1)  # two windows, each from an empty cache
    assert llm["top1_agreement"] == 1.0
    answers = llm["answers"]
    assert answers["count"] == 5  # video, audio and three text prompts
    assert answers["identical"] == answers["count"]
    assert answers["prefix_agreement"] == answers["token_agreement"] == 1.0
    assert answers["tokens"] == ANSWER_TOKENS
    assert same["size"]["ratio_vs_fp32"] == 1.0
    assert same["goal"] is None  # an fp32 decoder has no quantization goal


def test_int4_variant_is_measured_not_assumed(report):
    v = report["variants"][1]
    assert v["precision"] == {s: "int4" for s in ("vision", "image_projector", "audio", "decoder")}
    assert v["from_this_fp32"] is True
    for stage, s in v["stages"].items():
        # Rounding 4-bit weights changes every output, yet the outputs stay close to fp32's.
        assert 0.5 < s["cosine"] < 1.0, stage
        assert 0.0 < s["max_rel_err"] < 1.0, stage
        assert s["size_ratio"] < 1.0, stage
    assert v["llm"]["perplexity"] != report["fp32"]["perplexity"]
    assert v["goal"]["limit_pct"] == 8.0
    assert v["goal"]["met"] == (abs(v["llm"]["perplexity_change_pct"]) <= 8.0)
    lo, hi = v["llm"]["perplexity_change_ci95_pct"]
    assert lo < v["llm"]["perplexity_change_pct"] < hi
    assert v["goal"]["met_beyond_noise"] == (max(abs(lo), abs(hi)) <= 8.0)
    assert v["size"]["stage_bytes"] < report["fp32"]["size"]["stage_bytes"]


def _runtime_and_torch_logits(ckpt: Path, engine: Path, text: Path, tokens: int, windows: int = 1):
    """Logits of each window (rows concatenated) and the predicted tokens, through the runtime's
    teacher forcing and through one full-sequence forward pass of the PyTorch reference per window."""
    import torch

    from vinci_edge.model.checkpoint import load_model
    from vinci_edge.runtime.pipeline import Pipeline

    pipe = Pipeline.from_engine(engine)
    model = load_model(ckpt)
    runtime, ref, targets = [], [], []
    for window in text_windows(pipe.tokenizer, read_text(text), tokens, windows, 0):
        runtime.append(teacher_forced_logits(pipe, window, "fp32", lambda s: None))
        with torch.inference_mode():
            ids = torch.tensor([window])
            ref.append(model.llm(inputs_embeds=model.embed_tokens(ids)).logits[0, :-1].float().numpy())
        targets += window[1:]
    return np.asarray(targets), np.concatenate(runtime), np.concatenate(ref)


def test_runtime_perplexity_equals_the_reference_model(tiny_ckpt, tiny_engine, report, settings):
    """Teacher forcing through OrtDecoder (one position at a time, KV cache) gives the logits and the
    perplexity the PyTorch reference computes in one full-sequence forward pass."""
    text = settings.resolved().text
    targets, runtime, ref = _runtime_and_torch_logits(tiny_ckpt, tiny_engine, text, TOKENS, windows=2)
    # Position by position (an off-by-one in the teacher forcing would fail here, not only on average).
    np.testing.assert_allclose(runtime, ref, rtol=0, atol=1e-3 * np.abs(ref).max())
    torch_ppl = perplexity(ref, targets)
    # fp32 kernels differ in summation order: 1e-4 relative is ~100x the differences seen.
    assert report["fp32"]["perplexity"] == pytest.approx(torch_ppl, rel=1e-4)


def test_runtime_perplexity_of_smollm2_equals_the_reference_model(smol_ckpt, smol_engine, settings):
    """The same on the real SmolLM2 LLM, where perplexity means something: real English text scores
    far below the vocabulary size (a random model's ~49k), and runtime and torch agree."""
    text = settings.resolved().text
    targets, runtime, ref = _runtime_and_torch_logits(smol_ckpt, smol_engine, text, 64)
    np.testing.assert_allclose(runtime, ref, rtol=0, atol=1e-3 * np.abs(ref).max())
    runtime_ppl, torch_ppl = perplexity(runtime, targets), perplexity(ref, targets)
    assert runtime_ppl == pytest.approx(torch_ppl, rel=1e-4)
    assert runtime_ppl < 100


def test_compare_definitions():
    f = np.array([[1.0, 0.0], [0.0, 2.0]])
    q = np.array([[1.0, 0.0], [0.0, 2.5]])
    got = compare(f, q)
    assert got["cosine"] == pytest.approx(1.0)
    assert got["max_rel_err"] == pytest.approx(0.5 / 2.0)
    assert got["rel_l2"] == pytest.approx(0.5 / np.sqrt(5.0))
    flipped = compare(f, -f)
    assert flipped["cosine"] == pytest.approx(-1.0)
    assert agreement([1, 2, 3, 4], [1, 2, 9, 4]) == {
        "prefix_agreement": 0.5,
        "token_agreement": 0.75,
        "first_divergence": 2,
    }
    # Uniform logits over V tokens: perplexity V.
    assert perplexity(np.zeros((3, 7)), np.array([0, 3, 6])) == pytest.approx(7.0)


def test_report_files(report, tmp_path):
    paths = write_report(report, tmp_path / "rep")
    assert [p.name for p in paths] == ["accuracy.json", "accuracy.md", "accuracy.svg"]
    data = json.loads(paths[0].read_text())
    assert set(data) == REPORT_KEYS
    assert data["schema"] == "vinci-edge/quant-accuracy/1"
    for v in data["variants"]:
        assert set(v) == VARIANT_KEYS
        assert set(v["llm"]) == LLM_KEYS
        for s in v["stages"].values():
            assert set(s) >= STAGE_KEYS
    md = paths[1].read_text()
    table = [line for line in md.splitlines() if line.startswith("| **")]
    assert [line.split("|")[1].strip() for line in table] == ["**fp32**", "**same**", "**int4**"]
    assert "(+0.00%; 95%: +0.0 to +0.0)" in table[1]
    goal = report["variants"][1]["goal"]
    if not goal["met"]:
        assert "NOT met (<= 8%)" in table[2]
    elif goal["met_beyond_noise"]:
        assert "| met (<= 8%)" in table[2]
    else:
        assert "met, but the 95% interval reaches past 8%" in table[2]
    assert "; 95%: " in table[2]
    root = ET.fromstring(paths[2].read_text())
    assert root.tag.endswith("svg")
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any(t.startswith("int4: ") and t.endswith(" %") for t in titles)  # the perplexity bar
    assert not list((tmp_path / "rep").glob(".*"))  # no temporary file left behind


def test_failed_variant_is_listed_with_its_error(report):
    broken = {**report, "variants": [failed_entry("awq", "/x", "int4-awq", "ModelOpt missing")]}
    assert set(broken["variants"][0]) == VARIANT_KEYS
    md = markdown(broken)
    assert "| **awq** | int4-awq |" in md and "not measured: ModelOpt missing" in md
    ET.fromstring(svg_plot(broken))


def test_towers_only(tiny_engine, int4_engine, settings):
    s = AccuracySettings(**{**settings.__dict__, "decoder": False})
    out = measure(tiny_engine, [int4_engine], s)
    v = out["variants"][0]
    assert out["fp32"]["perplexity"] is None and v["llm"] is None and v["goal"] is None
    assert "cosine" not in v["stages"]["decoder"] and "cosine" in v["stages"]["vision"]
    assert "perplexity" not in markdown(out)
    ET.fromstring(svg_plot(out))


def test_cli_round_trip(tiny_engine, int4_engine, clip, wav, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["quant-report", "--engine", str(tiny_engine), "--variant", str(int4_engine), "--out", str(out)]
    argv += [
        "--tokens",
        "16",
        "--windows",
        "1",
        "--answer-tokens",
        "3",
        "--video",
        str(clip),
        "--audio",
        str(wav),
    ]
    argv += ["--num-frames", "4"]
    assert cli_run(argv) == 0
    captured = capsys.readouterr()
    assert "quant-report: wrote" in captured.err  # progress and results go to stderr
    assert "| **tiny-int4** | int4 |" in captured.out
    data = json.loads((out / "accuracy.json").read_text())
    assert [v["name"] for v in data["variants"]] == ["tiny-int4"]
    assert data["settings"]["text_tokens"] == 16 and data["settings"]["answer_tokens"] == 3
    assert data["settings"]["text_windows"] == 1 and data["fp32"]["predicted_tokens"] == 15
    assert (out / "accuracy.md").read_text().count("| **") == 2


def test_cli_refuses_a_quantized_reference(tiny_engine, int4_engine, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["quant-report", "--engine", str(int4_engine), "--variant", str(tiny_engine), "--out", str(out)]
    assert cli_run(argv) == 2
    assert "is a quantized engine" in capsys.readouterr().err
    assert not out.exists()  # refused before anything was written
    with pytest.raises(EngineError, match="is a quantized engine"):
        check_engines(int4_engine, [tiny_engine])


def test_unreadable_text_is_refused_before_any_work(tiny_engine, int4_engine, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe not utf-8 \x80" * 10)
    with pytest.raises(MediaError, match="UTF-8"):
        measure(tiny_engine, [int4_engine], AccuracySettings(text=bad))
    with pytest.raises(MediaError, match="does not exist"):
        measure(tiny_engine, [int4_engine], AccuracySettings(text=tmp_path / "none.txt"))


def test_change_interval_is_paired_and_widens_with_noise():
    rng = np.random.default_rng(0)
    ref = rng.uniform(1.0, 5.0, 640)
    assert change_interval(ref, ref) == [0.0, 0.0]
    shifted = change_interval(ref, ref + 0.1)  # the same change on every token: no spread
    assert shifted == pytest.approx([100 * (np.exp(0.1) - 1)] * 2)
    quiet = change_interval(ref, ref + 0.1 + rng.normal(0, 0.1, 640))
    noisy = change_interval(ref, ref + 0.1 + rng.normal(0, 1.0, 640))
    for lo, hi in (quiet, noisy):
        assert lo < 100 * (np.exp(0.1) - 1) < hi
    assert noisy[1] - noisy[0] > 5 * (quiet[1] - quiet[0])


def test_windows_need_enough_text(tiny_engine, settings):
    from vinci_edge.runtime.engine import Engine
    from vinci_edge.text.tokenizer import TextTokenizer

    tok = TextTokenizer.from_folder(Engine.load(tiny_engine).tokenizer_dir)
    text = "The quick brown fox jumps over the lazy dog. " * 20
    n = len(tok.encode(text))
    windows = text_windows(tok, text, 16, 3, 5)
    assert [len(w) for w in windows] == [16, 16, 16]
    assert sum(windows, []) == tok.encode(text)[5 : 5 + 48]  # consecutive, no gap, no overlap
    with pytest.raises(MediaError, match=f"the text has {n} tokens"):
        text_windows(tok, text, n, 2, 0)
    with pytest.raises(ConfigError, match="--windows 0"):
        AccuracySettings(**{**settings.__dict__, "text_windows": 0}).resolved()
