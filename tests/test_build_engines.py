"""`vinci-edge build-engines` without TensorRT: optimization profiles derived from a real exported
engine's manifest, the plan of what would be built, engine keys and the refusal of a plan built for
another device, TensorRT version or graph, and the command's own refusals."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest

from vinci_edge import stages as st
from vinci_edge.cli import run
from vinci_edge.engines.plan import BuildOptions, make_plan, typing_for
from vinci_edge.errors import EngineError
from vinci_edge.manifest import Manifest
from vinci_edge.runtime import profiles
from vinci_edge.runtime.engine_key import (
    DeviceInfo,
    EngineKey,
    check_key,
    find_plan,
    onnx_hash,
    rebuild_command,
)
from vinci_edge.runtime.profiles import AxisRange

ORIN = DeviceInfo("Orin", (8, 7), "10.3.0")
H100 = DeviceInfo("NVIDIA H100 80GB HBM3", (9, 0), "10.13.2")


@pytest.fixture(scope="module")
def manifest(tiny_engine) -> Manifest:
    return Manifest.read(tiny_engine)


def _before_the_portable_graph(manifest: Manifest) -> Manifest:
    """The manifest of an engine exported before export wrote the portable decoder graph."""
    m = copy.copy(manifest)
    m.decoder_graphs = {}
    return m


# ---- profiles ---------------------------------------------------------------------------------------
def test_media_profiles_come_from_the_manifest_and_the_runtime_batches(manifest):
    from vinci_edge.runtime.stages import MAX_BATCH

    assert profiles.RUNTIME_BATCH == MAX_BATCH  # the profile max is what the runtime feeds
    cfg = manifest.config
    (vision,) = profiles.stage_profiles(manifest, st.VISION, manifest.stages[st.VISION])
    assert vision.axes == {"frames": AxisRange(1, min(cfg.num_video_frames, 8), 8)}
    (x,) = vision.inputs
    assert x.name == "pixel_values" and x.min[1:] == x.max[1:] == (3, 56, 56)
    assert (x.min[0], x.opt[0], x.max[0]) == (1, cfg.num_video_frames, 8)
    (audio,) = profiles.stage_profiles(manifest, st.AUDIO, manifest.stages[st.AUDIO])
    assert audio.axes == {"chunks": AxisRange(1, 1, 4)}
    assert audio.inputs[0].max == (4, 128, 3000)
    (proj,) = profiles.stage_profiles(manifest, st.IMAGE_PROJECTOR, manifest.stages[st.IMAGE_PROJECTOR])
    tiles = manifest.model_config["root"]["max_tiles"]
    assert proj.axes == {"blocks": AxisRange(1, 1, tiles + 1)}


def test_decoder_profiles_cover_prefill_and_decode_within_the_cache(manifest):
    m = manifest
    assert profiles.portable_decoder(m).file == "decoder_portable.onnx"
    spec = m.decoder
    prefill, decode = profiles.stage_profiles(m, st.DECODER, profiles.portable_decoder(m))
    assert (prefill.name, decode.name) == ("prefill", "decode")
    assert (
        prefill.axes["sequence"].max == spec.max_context and prefill.axes["past"].max == spec.max_context - 1
    )
    assert decode.axes["sequence"] == AxisRange(1, 1, 1)
    shapes = {t.name: t for t in decode.inputs}
    assert shapes["inputs_embeds"].max == (1, 1, spec.hidden_size)
    assert shapes["past_key_0"].min == (1, spec.kv_heads, 0, spec.head_dim)
    assert shapes[f"past_value_{spec.num_layers - 1}"].max == (
        1,
        spec.kv_heads,
        spec.max_context - 1,
        spec.head_dim,
    )
    assert len(decode.inputs) == 1 + 2 * spec.num_layers


def test_overrides_replace_one_axis_and_are_checked_against_the_manifest(manifest):
    (vision,) = profiles.stage_profiles(
        manifest, st.VISION, manifest.stages[st.VISION], {"frames": AxisRange(1, 2, 4)}
    )
    assert vision.inputs[0].max[0] == 4
    with pytest.raises(EngineError, match="--profile names axis frame, which no stage"):
        profiles.check_override_names(manifest, [st.VISION], {"frame": AxisRange(1, 1, 1)})
    m = manifest
    too_long = {"sequence": AxisRange(1, 1, m.decoder.max_context + 1)}
    with pytest.raises(EngineError, match="the decoder holds 2048 positions"):
        profiles.stage_profiles(m, st.DECODER, profiles.portable_decoder(m), too_long)


@pytest.mark.parametrize("bad", [(2, 1, 3), (-1, 0, 1), (0, 0, 0), (1, 5, 4)])
def test_an_axis_range_must_be_ordered(bad):
    with pytest.raises(ValueError):
        AxisRange(*bad)


# ---- the plan ---------------------------------------------------------------------------------------
def test_the_plan_builds_every_stage_with_the_portable_decoder_graph(manifest, tiny_engine):
    plans = make_plan(tiny_engine, manifest, None, BuildOptions(), tiny_engine / "tensorrt", None)
    by = {p.stage: p for p in plans}
    assert {s for s, p in by.items() if p.action == "build"} == {
        st.VISION,
        st.IMAGE_PROJECTOR,
        st.AUDIO,
        st.DECODER,
    }
    assert by[st.DECODER].graph[0].name == "decoder_portable.onnx"


def test_an_engine_without_a_portable_graph_skips_the_decoder_and_says_why(manifest, tiny_engine):
    old = _before_the_portable_graph(manifest)
    assert profiles.portable_decoder(old) is None
    plans = make_plan(tiny_engine, old, None, BuildOptions(), tiny_engine / "tensorrt", None)
    by = {p.stage: p for p in plans}
    assert {s for s, p in by.items() if p.action == "build"} == {st.VISION, st.IMAGE_PROJECTOR, st.AUDIO}
    assert by[st.DECODER].action == "skip" and by[st.DECODER].reason == profiles.NO_PORTABLE_DECODER
    with pytest.raises(EngineError, match="no portable decoder graph"):
        make_plan(tiny_engine, old, [st.DECODER], BuildOptions(), tiny_engine / "tensorrt", None)


def test_the_key_is_set_once_the_device_is_known_and_a_built_plan_is_reused(manifest, tiny_engine, tmp_path):
    (p,) = make_plan(tiny_engine, manifest, [st.VISION], BuildOptions(), tmp_path, ORIN)
    assert p.action == "build" and p.key.device == ORIN
    assert p.plan_path == tmp_path / ORIN.slug / p.key.file_name() and "orin-sm_87-trt10.3.0" in str(
        p.plan_path
    )
    p.plan_path.parent.mkdir(parents=True)
    p.plan_path.write_bytes(b"plan")
    p.plan_path.with_suffix(".json").write_text(json.dumps({"key": p.key.to_dict()}))
    (again,) = make_plan(tiny_engine, manifest, [st.VISION], BuildOptions(), tmp_path, ORIN)
    assert again.action == "reuse"
    (forced,) = make_plan(tiny_engine, manifest, [st.VISION], BuildOptions(force=True), tmp_path, ORIN)
    assert forced.action == "build"
    (other,) = make_plan(tiny_engine, manifest, [st.VISION], BuildOptions(precision="fp16"), tmp_path, ORIN)
    assert other.action == "build" and other.settings != p.settings  # another setting, another plan


def test_typing_follows_the_graph_for_qdq_and_the_option_otherwise():
    for q in ("int8", "fp8", "int4-awq", "fp16"):
        assert typing_for(q, "fp16").strongly_typed
    assert not typing_for("fp32", "fp16").strongly_typed
    assert typing_for("fp32", "auto").strongly_typed and typing_for("fp32", "auto").tf32
    assert not typing_for("fp32", "fp32").tf32


def test_stages_tensorrt_cannot_run_are_refused(manifest, tiny_engine, tmp_path):
    m = copy.deepcopy(manifest)
    m.stages[st.VISION].precision = "int4"
    with pytest.raises(EngineError, match="'vision' is quantized as int4, a format for ONNX Runtime's CPU"):
        make_plan(tiny_engine, m, [st.VISION], BuildOptions(), tmp_path, None)
    m.stages[st.VISION].precision = "fp8"
    with pytest.raises(EngineError, match=r"FP8, which needs .* 8.9 .* this is Orin \(sm_87\)"):
        make_plan(tiny_engine, m, [st.VISION], BuildOptions(), tmp_path, ORIN)
    (p,) = make_plan(tiny_engine, m, [st.VISION], BuildOptions(), tmp_path, H100)
    assert p.action == "build" and p.typing.strongly_typed


# ---- keys ---------------------------------------------------------------------------------------------
def test_changing_any_key_component_changes_the_key():
    base = EngineKey.make("vision", ORIN, "a" * 64, "s1")
    variants = [
        replace(base, stage="audio"),
        replace(base, gpu="Thor"),
        replace(base, compute_capability=(11, 0)),
        replace(base, tensorrt="10.3.1"),
        replace(base, onnx_sha256="b" * 64),
        replace(base, settings="s2"),
    ]
    digests = {base.digest} | {v.digest for v in variants}
    assert len(digests) == 1 + len(variants)
    assert EngineKey.from_dict(base.to_dict(), "x") == base


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": (9, 0)},
         "was built for NVIDIA H100 80GB HBM3 (sm_90) with TensorRT 10.3.0; this is Orin (sm_87)"),
        ({"tensorrt": "10.1.0"}, "was built with TensorRT 10.1.0; this runtime has TensorRT 10.3.0"),
        ({"onnx_sha256": "f" * 64}, "was built from another vision graph than the engine folder holds now"),
        ({"settings": "other"}, "was built with other settings"),
    ],
)  # fmt: skip
def test_a_mismatched_plan_is_refused_saying_what_to_rebuild(change, message):
    want = EngineKey.make("vision", ORIN, "a" * 64, "s1")
    with pytest.raises(EngineError, match="rebuild") as exc:
        check_key(replace(want, **change), want, Path("vision-x.plan"), rebuild_command("engine/smol"))
    assert message in exc.value.message
    assert exc.value.hint == "rebuild it here: `vinci-edge build-engines --engine engine/smol`"


def test_find_plan_refuses_plans_of_another_device_and_says_when_there_are_none(tmp_path):
    rebuild = rebuild_command("e")
    with pytest.raises(EngineError, match="there is no TensorRT engine for stage 'vision'"):
        find_plan(tmp_path, "vision", ORIN, "a" * 64, rebuild)
    key = EngineKey.make("vision", H100, "a" * 64, "s1")
    folder = tmp_path / H100.slug
    folder.mkdir()
    (folder / key.file_name()).write_bytes(b"plan")
    (folder / key.file_name()).with_suffix(".json").write_text(json.dumps({"key": key.to_dict()}))
    with pytest.raises(EngineError, match=r"built for NVIDIA H100 80GB HBM3 \(sm_90\) .* this is Orin"):
        find_plan(tmp_path, "vision", ORIN, "a" * 64, rebuild)
    path, record = find_plan(tmp_path, "vision", H100, "a" * 64, rebuild)
    assert path == folder / key.file_name() and record["key"]["settings"] == "s1"


def test_the_graph_hash_covers_the_external_data_and_is_remembered(tmp_path):
    graph, data = tmp_path / "g.onnx", tmp_path / "g.onnx.data"
    graph.write_bytes(b"graph")
    data.write_bytes(b"weights")
    first = onnx_hash([graph, data], tmp_path)
    assert (tmp_path / "onnx-hashes.json").is_file()
    assert onnx_hash([graph, data], tmp_path) == first
    data.write_bytes(b"weights, re-quantized")
    assert onnx_hash([graph, data], tmp_path) != first


# ---- the command ------------------------------------------------------------------------------------
def test_dry_run_prints_the_plan_without_tensorrt(tiny_engine, tmp_path, capsys):
    assert (
        run(["build-engines", "--engine", str(tiny_engine), "--out", str(tmp_path / "p"), "--dry-run"]) == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("device: none (")
    assert any(
        line.startswith("vision: build vision.onnx (fp32, strongly typed; default: frames=1:4:8)")
        for line in out
    )
    assert any(
        line.startswith("decoder: build decoder_portable.onnx (fp32, strongly typed; prefill: ")
        for line in out
    )
    assert not (tmp_path / "p").exists()


def test_without_tensorrt_the_command_says_so_after_checking_its_options(tiny_engine, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    base = ["build-engines", "--engine", str(tiny_engine), "--out", str(tmp_path / "p")]
    assert run([*base, "--profile", "frame=1:2:3"]) == 2  # an option error comes first
    assert "--profile names axis frame" in capsys.readouterr().err
    assert run(base) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("vinci-edge: error: build-engines needs TensorRT and a GPU: ")
    assert "Traceback" not in "\n".join(err) and len(err) == 2
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("frames=1:4", "is not AXIS=MIN:OPT:MAX"),
        ("frames", "is not AXIS=MIN:OPT:MAX"),
        ("=1:2:3", "is not AXIS=MIN:OPT:MAX"),
        ("frames=a:b:c", "MIN, OPT and MAX must be integers"),
        ("frames=4:2:8", "is not min <= opt <= max"),
    ],
)
def test_profile_overrides_are_checked_where_they_are_parsed(value, message, tmp_path, capsys):
    assert run(["build-engines", "--engine", str(tmp_path / "e"), "--profile", value]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("vinci-edge build-engines: error: argument --profile: ") and message in err[0]


def test_an_axis_given_twice_is_refused(tmp_path, capsys):
    argv = ["build-engines", "--engine", str(tmp_path / "e"), "--profile", "frames=1:1:8"]
    assert run([*argv, "--profile", "frames=1:2:4"]) == 2
    assert "axis frames is given twice" in capsys.readouterr().err
