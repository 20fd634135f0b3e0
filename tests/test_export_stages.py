"""Vision / image-projector / audio stage graphs in ONNX Runtime against the PyTorch reference, and
the numpy dynamic-S2 merge against the reference's torch one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from vinci_edge.export import stage_spec  # noqa: E402
from vinci_edge.export.audio import export_audio  # noqa: E402
from vinci_edge.export.vision import VisionStage, export_image_projector, export_vision  # noqa: E402
from vinci_edge.model.checkpoint import load_model  # noqa: E402
from vinci_edge.model.vision import merge_chessboard, merge_s2_features, split_chessboard  # noqa: E402
from vinci_edge.request.s2_merge import area_resize, merge_image_features, merge_image_tokens  # noqa: E402

FP32_ATOL = 1e-4
# fp16 engines vs the fp32 reference, relative to the largest |reference| value: 2e-3 is ~2 fp16
# ulps there. Measured ~6-7e-4 (about one ulp) on tiny and nano for every output.
FP16_TOL = 2e-3


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _err(a: np.ndarray, b: torch.Tensor) -> float:
    return float(np.abs(a.astype(np.float32) - b.float().numpy()).max())


def _fp16_ok(a: np.ndarray, b: torch.Tensor) -> bool:
    return _err(a, b) <= FP16_TOL * float(b.abs().max())


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return load_model(tiny_ckpt)


@pytest.fixture(scope="module")
def stages(model, tmp_path_factory):
    """The three fp32 stage graphs of `tiny`: {name: (path, manifest entry)}."""
    out = tmp_path_factory.mktemp("engine")
    exporters = {"vision": export_vision, "image_projector": export_image_projector, "audio": export_audio}
    result = {}
    for name, fn in exporters.items():
        messages: list[str] = []
        entry = fn(model, out / f"{name}.onnx", progress=messages.append)
        assert len(messages) >= 3, messages  # what it does, saving, done
        result[name] = (out / f"{name}.onnx", entry)
    return result


@pytest.fixture(scope="module")
def sessions(stages):
    return {name: _session(path) for name, (path, _) in stages.items()}


def _pixels(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---- parity ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3])
def test_vision_matches_reference(model, sessions, n):
    px = _pixels(n, model.cfg.image_size, seed=n)
    tokens, feats = sessions["vision"].run(["tokens", "features"], {"pixel_values": px.numpy()})
    with torch.inference_mode():
        ref_tokens, ref_feats = model.encode_frames(px), model.vision_tower(px)
    assert tokens.shape == tuple(ref_tokens.shape) == (n, model.cfg.tokens_per_frame, model.cfg.hidden_size)
    assert feats.shape == tuple(ref_feats.shape)
    assert _err(tokens, ref_tokens) <= FP32_ATOL
    assert _err(feats, ref_feats) <= FP32_ATOL


@pytest.mark.parametrize("n", [1, 3])
def test_image_projector_matches_reference(model, sessions, n):
    cfg = model.cfg
    p = (cfg.image_size // cfg.patch_size) ** 2
    x = torch.randn(n, p, cfg.mm_hidden_size, generator=torch.Generator().manual_seed(n))
    (tokens,) = sessions["image_projector"].run(["tokens"], {"features": x.numpy()})
    with torch.inference_mode():
        ref = model.mm_projector(x)
    assert tokens.shape == tuple(ref.shape)
    assert _err(tokens, ref) <= FP32_ATOL


@pytest.mark.parametrize("c", [1, 3])
def test_audio_matches_reference(model, sessions, c):
    cfg = model.cfg
    mel = torch.randn(c, cfg.num_mel_bins, 3000, generator=torch.Generator().manual_seed(c))
    (tokens,) = sessions["audio"].run(["tokens"], {"mel": mel.numpy()})
    with torch.inference_mode():
        ref = model.encode_audio(mel)
    assert tokens.shape == (c, cfg.audio_tokens_per_chunk, cfg.hidden_size)
    assert _err(tokens, ref) <= FP32_ATOL


def test_manifest_entries(model, stages):
    cfg = model.cfg
    s, d = cfg.image_size, cfg.hidden_size
    p = (s // cfg.patch_size) ** 2
    want = {
        "vision": (
            [("pixel_values", ["frames", 3, s, s])],
            [("tokens", ["frames", cfg.tokens_per_frame, d]), ("features", ["frames", p, cfg.vision_width])],
        ),
        "image_projector": (
            [("features", ["blocks", p, cfg.mm_hidden_size])],
            [("tokens", ["blocks", cfg.tokens_per_frame, d])],
        ),
        "audio": (
            [("mel", ["chunks", cfg.num_mel_bins, 3000])],
            [("tokens", ["chunks", cfg.audio_tokens_per_chunk, d])],
        ),
    }
    for name, (path, entry) in stages.items():
        assert entry["file"] == path.name
        assert entry["dtype"] == "float32" and entry["opset"] >= 17
        assert entry["exporter"].startswith("torch.onnx (dynamo) ")
        ins, outs = want[name]
        assert [(i["name"], i["shape"]) for i in entry["inputs"]] == ins
        assert [(o["name"], o["shape"]) for o in entry["outputs"]] == outs
        assert all(io["dtype"] == "float32" for io in entry["inputs"] + entry["outputs"])
        # tiny's weights are far below the threshold: one self-contained file
        assert entry["external_data"] is None
        assert not path.with_name(path.name + ".data").exists()


# ---- the vision graph stops at the select layer -------------------------------------------------


def test_vision_graph_has_no_layer_after_the_feature(model, stages):
    vit = model.vision_tower.vision_tower.vision_model
    num_layers = len(vit.encoder.layers)
    assert model.vision_tower.select_layer == -2
    proto = onnx.load(str(stages["vision"][0]))
    # per kept layer: q, k, v, out, fc1, fc2 + the two attention products; + 2 projector linears
    matmuls = sum(n.op_type == "MatMul" for n in proto.graph.node)
    assert matmuls == 8 * (num_layers - 1) + 2
    # (linear weights are renamed by the exporter's transpose folding; the names left must not
    # come from the last layer, the post-layernorm or the head)
    tower_names = [t.name for t in proto.graph.initializer if not t.name.startswith("projector.")]
    last = f"layers.{num_layers - 1}."
    assert not [n for n in tower_names if last in n or "post_layernorm" in n or "head" in n]
    # and by size: fewer weights than the tower minus its last layer and head
    tower_minus = sum(p.numel() for p in vit.parameters()) - sum(
        p.numel() for m in (vit.encoder.layers[-1], vit.post_layernorm, vit.head) for p in m.parameters()
    )
    graph_numel = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    assert graph_numel < tower_minus + sum(p.numel() for p in model.mm_projector.parameters())


@pytest.mark.parametrize("select", [-1, -2, -3, 0, 1])
def test_vision_wrapper_equals_tower_for_any_select_layer(model, select):
    tower = model.vision_tower
    px = _pixels(2, model.cfg.image_size, seed=7)
    saved = tower.select_layer
    tower.select_layer = select
    try:
        with torch.inference_mode():
            tokens, feats = VisionStage(model)(px)
            ref = tower(px)
            ref_tokens = model.encode_frames(px)
    finally:
        tower.select_layer = saved
    torch.testing.assert_close(feats, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(tokens, ref_tokens, rtol=0, atol=1e-6)


# ---- external data --------------------------------------------------------------------------------


def test_external_data_above_threshold(model, tmp_path, monkeypatch):
    monkeypatch.setattr(stage_spec, "EXTERNAL_DATA_BYTES", 0)
    path = tmp_path / "image_projector.onnx"
    path.with_name(path.name + ".data").write_bytes(b"stale")
    entry = export_image_projector(model, path)
    data = path.with_name("image_projector.onnx.data")
    assert entry["external_data"] == data.name and data.stat().st_size > 1000
    proto = onnx.load(str(path), load_external_data=False)
    locations = {
        kv.value
        for t in proto.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
        for kv in t.external_data
        if kv.key == "location"
    }
    assert locations == {data.name}  # one data file per graph
    x = torch.randn(2, (56 // 14) ** 2, model.cfg.mm_hidden_size)
    (tokens,) = _session(path).run(["tokens"], {"features": x.numpy()})
    with torch.inference_mode():
        assert _err(tokens, model.mm_projector(x)) <= FP32_ATOL


# ---- S2 merge in numpy ------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [(1, 3), (2, 2), (3, 1), (3, 4)])
@pytest.mark.parametrize("resize_idx", [-1, 0])
def test_s2_merge_equals_reference(block_size, resize_idx):
    scales = [56, 112, 168]
    rows, cols = block_size
    n = 1 + 4 + rows * cols
    feats = torch.randn(n, 16, 8, generator=torch.Generator().manual_seed(rows * 10 + cols))
    merged, (r, c) = merge_s2_features(feats, scales, block_size, resize_idx)
    ref = split_chessboard(merged, r, c).flatten(2).transpose(1, 2)
    blocks, size = merge_image_features(feats.numpy(), scales, block_size, resize_idx)
    assert size == (r, c)
    assert blocks.shape == tuple(ref.shape) and blocks.dtype == np.float32
    np.testing.assert_allclose(blocks, ref.numpy(), rtol=0, atol=1e-6)

    tokens = torch.randn(r * c, 9, 5)
    ref_tokens = merge_chessboard(tokens, r, c).flatten(2).transpose(1, 2)[0]
    np.testing.assert_array_equal(merge_image_tokens(tokens.numpy(), r, c), ref_tokens.numpy())


@pytest.mark.parametrize(
    ("src", "dst"),
    [((8, 12), (4, 4)), ((7, 5), (3, 4)), ((4, 4), (9, 6)), ((2, 3), (7, 1)), ((5, 5), (5, 5))],
)
def test_area_resize_is_torch_area_interpolation(src, dst):
    x = torch.randn(1, 3, *src, generator=torch.Generator().manual_seed(0))
    ref = F.interpolate(x, size=dst, mode="area")[0].permute(1, 2, 0)
    got = area_resize(x[0].permute(1, 2, 0).numpy(), dst)
    np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=1e-6)


def test_s2_merge_rejects_a_wrong_tile_count():
    with pytest.raises(ValueError, match="tiles"):
        merge_image_features(np.zeros((6, 16, 8), np.float32), [56, 112, 168], (2, 2), -1)


@pytest.mark.parametrize("block_size", [(2, 3), (1, 1)])
def test_image_end_to_end_numpy_s2(model, sessions, block_size):
    """tiles -> ORT vision features -> numpy merge -> ORT image projector -> numpy token merge."""
    cfg = model.cfg
    rows, cols = block_size
    px = _pixels(1 + 4 + rows * cols, cfg.image_size, seed=11)
    (feats,) = sessions["vision"].run(["features"], {"pixel_values": px.numpy()})
    blocks, (r, c) = merge_image_features(feats, cfg.s2_scales, block_size, cfg.s2_resize_output_to_scale_idx)
    (tokens,) = sessions["image_projector"].run(["tokens"], {"features": blocks})
    got = merge_image_tokens(tokens, r, c)
    with torch.inference_mode():
        ref = model.encode_image(px, block_size)
    assert got.shape == tuple(ref.shape)
    assert _err(got, ref) <= FP32_ATOL


# ---- fp16 ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fp16_stages(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("engine16")
    entries = {
        "vision": export_vision(model, out / "vision.onnx", dtype="fp16"),
        "audio": export_audio(model, out / "audio.onnx", dtype="float16"),
    }
    return out, entries


def _fp16_session(path):
    """An ONNX Runtime session for an fp16 graph on the CPU, or a skip that names the missing kernel.

    ONNX Runtime 1.24's x86 CPU provider runs only data movement (Reshape, Transpose, Gather), Clip
    and some LayerNormalizations in fp16; for MatMul, Conv, Add, Gelu, Softmax, ... it inserts fp32
    Casts around the node at session creation (InsertCastTransformer: the 22 Casts of nano's fp16
    vision graph become 192). So these tests check the fp16 graph - fp16 weights and I/O, its
    structure - not fp16 arithmetic, which is the GPU providers' job. Should a build refuse a node
    outright, skip and say which.
    """
    try:
        return _session(path)
    except Exception as exc:  # ORT raises its own exception types
        msg = str(exc)
        if "NOT_IMPLEMENTED" in msg or "Could not find an implementation" in msg:
            pytest.skip(
                f"onnxruntime {ort.__version__} CPUExecutionProvider cannot run this fp16 graph "
                f"({msg.splitlines()[0][:200]}); fp16 engines are for GPU providers"
            )
        raise


def test_fp16_export_keeps_the_model_and_types_the_io(model, fp16_stages):
    _, entries = fp16_stages
    assert all(p.dtype == torch.float32 for p in model.parameters())  # a cast copy was exported
    for entry in entries.values():
        assert entry["dtype"] == "float16"
        assert all(io["dtype"] == "float16" for io in entry["inputs"] + entry["outputs"])


def test_fp16_vision_parity(model, fp16_stages):
    out, _ = fp16_stages
    sess = _fp16_session(out / "vision.onnx")
    px = _pixels(3, model.cfg.image_size, seed=5)
    tokens, feats = sess.run(["tokens", "features"], {"pixel_values": px.numpy().astype(np.float16)})
    assert tokens.dtype == np.float16
    with torch.inference_mode():
        assert _fp16_ok(tokens, model.encode_frames(px))
        assert _fp16_ok(feats, model.vision_tower(px))


def test_fp16_audio_parity(model, fp16_stages):
    out, _ = fp16_stages
    sess = _fp16_session(out / "audio.onnx")
    mel = torch.randn(2, model.cfg.num_mel_bins, 3000, generator=torch.Generator().manual_seed(3))
    (tokens,) = sess.run(["tokens"], {"mel": mel.numpy().astype(np.float16)})
    assert tokens.dtype == np.float16
    with torch.inference_mode():
        assert _fp16_ok(tokens, model.encode_audio(mel))


def test_fp16_softmax_runs_in_float32(fp16_stages):
    """SigLIP asks for its attention softmax in float32; the graph must not compute it in fp16."""
    out, _ = fp16_stages
    proto = onnx.load(str(out / "vision.onnx"), load_external_data=False)
    producers = {o: n for n in proto.graph.node for o in n.output}
    softmaxes = [n for n in proto.graph.node if n.op_type == "Softmax"]
    assert softmaxes
    for node in softmaxes:
        cast = producers.get(node.input[0])
        assert cast is not None and cast.op_type == "Cast"
        assert onnx.helper.get_attribute_value(next(a for a in cast.attribute if a.name == "to")) == (
            onnx.TensorProto.FLOAT
        )


# ---- nano-sized vision (the shapes of the CPU benchmark model) ------------------------------------------


@pytest.mark.slow
def test_nano_vision_parity(tmp_path):
    from vinci_edge.model.omnivinci import OmniVinciModel
    from vinci_edge.presets import preset_config

    torch.manual_seed(0)
    nano = OmniVinciModel(preset_config("nano"), with_llm=False).eval()
    entry = export_vision(nano, tmp_path / "vision.onnx")
    assert entry["external_data"] == "vision.onnx.data"  # ~330 MB of weights
    px = _pixels(2, nano.cfg.image_size, seed=1)
    tokens, feats = _session(tmp_path / "vision.onnx").run(None, {"pixel_values": px.numpy()})
    with torch.inference_mode():
        assert _err(tokens, nano.encode_frames(px)) <= FP32_ATOL
        assert _err(feats, nano.vision_tower(px)) <= FP32_ATOL
