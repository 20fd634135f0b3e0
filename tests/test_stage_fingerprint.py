"""Every stage graph says which export of which model it belongs to (its ONNX metadata_props), and
the runtime refuses a graph that another engine's export wrote, even when its shapes fit.

The swapped files come from the tiny preset exported from another seed: same configs, same shapes,
same file sizes (so the same size-based checkpoint fingerprint), other weights. The manifest checks
and the shape checks cannot tell such a file from the engine's own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from vinci_edge import stages as st
from vinci_edge.errors import EngineError
from vinci_edge.generation import GenerationConfig
from vinci_edge.manifest import PROP_EXPORT_ID, PROP_FINGERPRINT, PROP_MODEL_ID, PROP_STAGE
from vinci_edge.runtime.pipeline import Pipeline


@pytest.fixture(scope="module")
def other_seed_engine(tmp_path_factory) -> Path:
    """vision + decoder of the tiny preset from seed 1 (tiny_engine is seed 0), exported alike."""
    from vinci_edge.export.engine import export_engine
    from vinci_edge.model.checkpoint import init_checkpoint

    root = tmp_path_factory.mktemp("other_seed")
    init_checkpoint("tiny", root / "ckpt", seed=1)
    export_engine(root / "ckpt", root / "engine", stages=[st.VISION, st.DECODER], max_context=2048)
    return root / "engine"


def _copy(engine: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "engine"
    shutil.copytree(engine, dst)
    return dst


def _swap(folder: Path, donor: Path, file: str) -> None:
    """Put the donor engine's `file` (and its weights file, if it has one) in place of the folder's."""
    (folder / f"{file}.data").unlink(missing_ok=True)
    for path in donor.glob(f"{file}*"):
        shutil.copy(path, folder / path.name)


def _props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _set_props(path: Path, props: dict[str, str] | None) -> None:
    """Rewrite the graph with `props` as its vinci_edge props (None: none at all, as before them)."""
    model = onnx.load(str(path), load_external_data=False)
    kept = {p.key: p.value for p in model.metadata_props if not p.key.startswith("vinci_edge.")}
    onnx.helper.set_model_props(model, {**kept, **(props or {})})
    onnx.save_model(model, str(path))


def _manifest(engine: Path) -> dict:
    return json.loads((engine / "manifest.json").read_text())


def test_every_stage_graph_carries_its_provenance(tiny_engine):
    m = _manifest(tiny_engine)
    for name, entry in m["stages"].items():
        props = _props(tiny_engine / entry["file"])
        assert props[PROP_STAGE] == name
        assert props[PROP_MODEL_ID] == m["model_id"]
        assert props[PROP_FINGERPRINT] == m["source"]["fingerprint"]
        assert props[PROP_EXPORT_ID] == m["source"]["export_id"]


def test_stamping_a_graph_leaves_its_external_weights_as_they_were(tiny_engine, tmp_path):
    """The decoder keeps its weights in decoder.onnx.data: adding props rewrites only the graph."""
    from vinci_edge.export.onnx_writer import add_props

    for path in tiny_engine.glob("decoder.onnx*"):
        shutil.copy(path, tmp_path / path.name)
    weights = (tmp_path / "decoder.onnx.data").read_bytes()
    add_props(tmp_path / "decoder.onnx", {PROP_STAGE: "decoder", "other": "kept"})
    add_props(tmp_path / "decoder.onnx", {"other": "replaced"})
    assert (tmp_path / "decoder.onnx.data").read_bytes() == weights
    props = _props(tmp_path / "decoder.onnx")
    assert props[PROP_STAGE] == "decoder" and props["other"] == "replaced"
    stamped = onnx.load(str(tmp_path / "decoder.onnx"))  # with its weights, from where the graph says
    original = onnx.load(str(tiny_engine / "decoder.onnx"))
    assert [t.SerializeToString() for t in stamped.graph.initializer] == [
        t.SerializeToString() for t in original.graph.initializer
    ]


@pytest.mark.parametrize("stage, file", [(st.VISION, "vision.onnx"), (st.DECODER, "decoder.onnx")])
def test_a_stage_file_from_another_seed_is_refused(tiny_engine, other_seed_engine, tmp_path, stage, file):
    folder = _copy(tiny_engine, tmp_path)
    _swap(folder, other_seed_engine, file)
    pipe = Pipeline.from_engine(folder)  # the manifest checks pass: nothing there tells the files apart
    with pytest.raises(EngineError, match=f"{file} comes from another export") as info:
        pipe.runner(stage)
    assert _manifest(other_seed_engine)["source"]["export_id"] in info.value.message
    assert "re-export" in info.value.hint


@pytest.mark.parametrize(
    "key, value, message",
    [
        (PROP_STAGE, st.AUDIO, "holds the 'audio' stage"),
        (PROP_MODEL_ID, "0123456789abcdef", "another model"),
        (PROP_FINGERPRINT, "0123456789abcdef", "another checkpoint"),
    ],
)
def test_each_provenance_prop_is_checked(tiny_engine, tmp_path, key, value, message):
    folder = _copy(tiny_engine, tmp_path)
    _set_props(folder / "vision.onnx", {**_props(folder / "vision.onnx"), key: value})
    with pytest.raises(EngineError, match=message):
        Pipeline.from_engine(folder).runner(st.VISION)


def test_a_graph_without_props_loads_in_an_engine_exported_before_them(tiny_engine, tmp_path):
    """Engines exported before the graphs carried props (schema 1 engines in the field) load as they
    did: neither their manifest nor their graphs say anything about the export."""
    folder = _copy(tiny_engine, tmp_path)
    m = _manifest(folder)
    del m["source"]["export_id"]
    (folder / "manifest.json").write_text(json.dumps(m))
    for entry in m["stages"].values():
        _set_props(folder / entry["file"], None)
    pipe = Pipeline.from_engine(folder)
    pipe.warmup()
    assert pipe.ask("Hi", GenerationConfig(max_new_tokens=2)).token_ids


def test_a_graph_without_props_is_refused_where_the_manifest_promises_them(tiny_engine, tmp_path):
    """An engine whose export wrote the props refuses a graph without them: a file from an export made
    before them (of any model) would otherwise pass unchecked."""
    folder = _copy(tiny_engine, tmp_path)
    _set_props(folder / "decoder.onnx", None)
    with pytest.raises(EngineError, match="decoder.onnx carries no record of its export"):
        Pipeline.from_engine(folder).runner(st.DECODER)


@pytest.mark.parametrize("name", ["int8-dynamic", "int4"])
def test_quantized_graphs_keep_the_props_and_load(quantized, tiny_engine, name):
    engine = quantized(name)
    for entry in _manifest(engine)["stages"].values():
        assert _props(engine / entry["file"]) == _props(tiny_engine / entry["file"]), entry["file"]
    Pipeline.from_engine(engine).warmup()


def test_a_quantized_stage_from_another_seed_is_refused(quantized, other_seed_engine, tmp_path):
    folder = _copy(quantized("int8-dynamic"), tmp_path)
    _swap(folder, other_seed_engine, "vision.onnx")
    with pytest.raises(EngineError, match="vision.onnx comes from another export"):
        Pipeline.from_engine(folder).runner(st.VISION)
