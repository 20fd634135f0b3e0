"""Calibration is reproducible from its sources and seed; SmoothQuant is exact in fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from quant_helpers import _manifest, _weight_matmul_names

from vinci_edge.manifest import DecoderSpec


def _calibration(engine: Path, media: Path, text: Path, seed: int, size: int = 2):
    from vinci_edge.quantization.calibration import CalibrationSources, build_calibration

    return build_calibration(engine, CalibrationSources.resolve([media], None, [text], size, seed))


def test_calibration_is_reproducible(tiny_engine, media, text):
    messages: list[str] = []
    from vinci_edge.quantization.calibration import CalibrationSources, build_calibration

    sources = CalibrationSources.resolve([media], None, [text], 2, 0)
    a = build_calibration(tiny_engine, sources, messages.append)
    b, c = _calibration(tiny_engine, media, text, 0), _calibration(tiny_engine, media, text, 1)
    assert [m.split(":")[0] for m in messages] == ["calibration request 1/2", "calibration request 2/2"]
    assert a.record == b.record  # same seed: same hashes, counts and sources
    for stage, feeds in a.samples.items():
        for fa, fb in zip(feeds, b.samples[stage], strict=True):
            assert fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)
    assert set(a.samples) == {"vision", "image_projector", "audio", "decoder"}
    # another seed draws other text windows (and frame counts): another decoder set
    assert c.record["stages"]["decoder"]["sha256"] != a.record["stages"]["decoder"]["sha256"]
    assert c.record["sources"]["seed"] == 1


def test_smoothquant_in_fp32_keeps_the_decoder_logits(tiny_engine, media, text, tmp_path):
    """SmoothQuant only moves scale between activations and weights, so in fp32 (before any
    quantizer) the decoder must compute the same function. Tolerance: the factors are applied in
    float64 and rounded to float32 once, i.e. ~1e-7 relative per weight; through two layers and
    the head that stays below 1e-4 of the logits' range (measured ~1e-6)."""
    from vinci_edge.quantization import graph as g
    from vinci_edge.quantization.calibration import decoder_feed
    from vinci_edge.quantization.smoothquant import smoothquant
    from vinci_edge.runtime.backend import SessionSettings, make_session

    spec = DecoderSpec.from_dict(_manifest(tiny_engine)["stages"]["decoder"]["spec"], "decoder spec")
    samples = _calibration(tiny_engine, media, text, 0).for_stage("decoder")
    model = g.load(tiny_engine / "decoder.onnx")
    before = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    report = smoothquant(model, 0.5, "decoder", samples, spec, tmp_path / "work")
    # every linear layer is smoothed: qkv and gate/up through their norm, o_proj through V, down
    # through the up columns, the head through the final norm
    assert len(report.smoothed) == len(_weight_matmul_names(tiny_engine / "decoder.onnx"))
    assert not report.skipped
    after = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    moved = max(float(np.max(np.abs(after[k] / np.where(v == 0, 1, v) - 1))) for k, v in before.items())
    assert moved > 0.5  # the factors are far from 1: the comparison below is not vacuous
    g.save(model, tmp_path / "smoothed.onnx")
    ref = make_session(tiny_engine / "decoder.onnx", SessionSettings())
    new = make_session(tmp_path / "smoothed.onnx", SessionSettings())
    # Only the logits: the V cache holds V / s by design (o_proj's weight carries the s back).
    for sample in samples:
        feed = decoder_feed(sample["inputs_embeds"], spec)
        (a,), (b,) = ref.run(["logits"], feed), new.run(["logits"], feed)
        assert np.max(np.abs(a - b)) <= 1e-4 * float(np.max(np.abs(a))), np.max(np.abs(a - b))
