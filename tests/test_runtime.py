"""The torch-free runtime against the PyTorch reference, and every bad input it can meet."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from vinci_edge.cli import run
from vinci_edge.errors import EngineError, PromptError
from vinci_edge.generation import GenerationConfig
from vinci_edge.metrics import Metrics
from vinci_edge.model.reference import Reference
from vinci_edge.runtime.engine import Engine
from vinci_edge.runtime.pipeline import Pipeline

FP32_TOL = 1e-4


@pytest.fixture(scope="module")
def tiny_pair(tiny_ckpt, tiny_engine):
    return Reference.from_checkpoint(tiny_ckpt), Pipeline.from_engine(tiny_engine)


def test_manifest_records_the_contract(tiny_engine, tiny_ckpt):
    m = json.loads((tiny_engine / "manifest.json").read_text())
    assert m["schema_version"] == 1 and m["format"] == "vinci-edge-engine"
    assert set(m["stages"]) == {"vision", "image_projector", "audio", "decoder"}
    for stage in m["stages"].values():
        assert stage["file"] and stage["dtype"] == "float32" and stage["inputs"] and stage["outputs"]
    assert m["crte"]["video"]["branch"] == "mtct" and m["teg"]["segment_duration"] == 2.0
    assert m["source"]["fingerprint"] and m["exporters"]["torch"]
    assert m["stages"]["decoder"]["spec"]["max_context"] == 2048
    assert (tiny_engine / "tokenizer" / "tokenizer.json").is_file()
    assert not (tiny_engine.parent / ".tiny.partial").exists()


def test_preprocessing_and_plan_are_the_reference_ones(tiny_pair, clip):
    ref, pipe = tiny_pair
    a = ref.prepare("What happens?", video=clip)
    b = pipe.prepare("What happens?", video=clip)
    assert a.input_ids == b.input_ids
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.mel_chunks, b.mel_chunks)
    for f in ("kind", "src", "scale", "a", "b"):
        np.testing.assert_array_equal(getattr(a.plan, f), getattr(b.plan, f))


def test_inputs_embeds_match_the_reference(tiny_pair, clip):
    ref, pipe = tiny_pair
    req = ref.prepare("What happens?", video=clip)
    expect = ref.inputs_embeds(req).numpy()
    got = pipe.inputs_embeds(req, Metrics())
    assert np.abs(got - expect).max() <= FP32_TOL


def test_decoder_logits_match_the_reference(tiny_pair):
    ref, pipe = tiny_pair
    torch.manual_seed(0)
    embeds = torch.randn(57, ref.cfg.hidden_size)
    with torch.inference_mode():
        ref_logits, cache = ref.model.prefill(embeds)
    dec = pipe.decoder
    dec.reset()
    logits = dec.append(embeds.numpy())
    assert np.abs(logits - ref_logits.numpy()).max() <= FP32_TOL
    tok = int(ref_logits.argmax())
    for _ in range(8):
        with torch.inference_mode():
            r = ref.model.step(tok, cache).numpy()
        o = dec.append(pipe.text_table[tok][None])
        assert np.abs(o - r).max() <= FP32_TOL
        tok = int(r.argmax())


def test_greedy_generation_is_token_identical_on_tiny(tiny_pair, clip):
    ref, pipe = tiny_pair
    gen = GenerationConfig(max_new_tokens=32, ignore_eos=True)
    a = ref.answer("What happens in this clip?", gen, video=clip)
    b = pipe.ask("What happens in this clip?", gen, video=clip)
    assert len(a.token_ids) == 32
    assert b.token_ids == a.token_ids
    assert b.text == a.text
    assert set(b.to_json()) >= set(a.to_json())  # same JSON shape as `generate`


@pytest.mark.slow
def test_greedy_generation_is_token_identical_on_smollm2(smol_ckpt, smol_engine, clip):
    ref = Reference.from_checkpoint(smol_ckpt)
    pipe = Pipeline.from_engine(smol_engine)
    gen = GenerationConfig(max_new_tokens=40, ignore_eos=True)
    for media in ({}, {"video": clip}):
        a = ref.answer("Write a short poem about the sea.", gen, **media)
        b = pipe.ask("Write a short poem about the sea.", gen, **media)
        assert b.token_ids == a.token_ids, media
    plain = pipe.ask("What is the capital of France?", GenerationConfig(max_new_tokens=16))
    assert "Paris" in plain.text and plain.stop_reason == "eos"


def test_streaming_and_stop_strings(tiny_pair, wav):
    _, pipe = tiny_pair
    gen = GenerationConfig(max_new_tokens=12, ignore_eos=True)
    full = pipe.ask("Hello", gen, audio=wav)
    pieces = list(pipe.stream("Hello", gen, audio=wav))
    assert "".join(pieces) == full.text
    assert len(full.text) > 6
    stop = full.text[3:6]
    cut = pipe.ask(
        "Hello", GenerationConfig(max_new_tokens=12, ignore_eos=True, stop_strings=(stop,)), audio=wav
    )
    assert cut.stop_reason == "stop_string" and stop not in cut.text
    assert cut.text == full.text[: full.text.index(stop)]


def test_sampling_is_seeded(tiny_pair):
    _, pipe = tiny_pair
    from vinci_edge.sampling import SamplingParams

    gen = GenerationConfig(
        max_new_tokens=10, ignore_eos=True, sampling=SamplingParams(temperature=0.8, top_p=0.9, seed=3)
    )
    assert pipe.ask("Hi", gen).token_ids == pipe.ask("Hi", gen).token_ids


def test_runtime_imports_no_torch(tiny_engine, wav):
    code = (
        "import sys\n"
        "from vinci_edge.runtime.pipeline import Pipeline\n"
        "from vinci_edge.generation import GenerationConfig\n"
        f"p = Pipeline.from_engine({str(tiny_engine)!r})\n"
        f"a = p.ask('Hi', GenerationConfig(max_new_tokens=3), audio={str(wav)!r})\n"
        "bad = [m for m in ('torch', 'transformers', 'modelopt') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print(len(a.token_ids))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_cli_run_json(tiny_engine, clip, capsys):
    assert (
        run(
            [
                "run",
                "--engine",
                str(tiny_engine),
                "--video",
                str(clip),
                "--prompt",
                "What?",
                "--max-new-tokens",
                "4",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert {"text", "token_ids", "timings", "stitch", "providers"} <= set(out)
    assert out["timings"]["stages"]["vision"] > 0 and out["plan"]["audio"] > 0


# ---- bad engine folders -----------------------------------------------------------------------------
def _copy(tiny_engine, tmp_path):
    dst = tmp_path / "engine"
    shutil.copytree(tiny_engine, dst)
    return dst


def _edit_manifest(folder, fn):
    m = json.loads((folder / "manifest.json").read_text())
    fn(m)
    (folder / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "manifest.json").unlink(), "no manifest.json"),
        (lambda f: (f / "manifest.json").write_text("{"), "not valid JSON"),
        (lambda f: _edit_manifest(f, lambda m: m.update(schema_version=99)), "schema version 99"),
        (lambda f: _edit_manifest(f, lambda m: m.update(format="other")), "not a vinci-edge engine"),
        (
            lambda f: _edit_manifest(f, lambda m: m["model_config"]["root"].update(num_video_frames=99)),
            "model id",
        ),
        (lambda f: (f / "decoder.onnx").unlink(), "decoder.onnx is missing"),
        (lambda f: (f / "embed_tokens.npy").unlink(), "embed_tokens.npy is missing"),
        (lambda f: shutil.rmtree(f / "tokenizer"), "tokenizer is missing"),
        (
            lambda f: _edit_manifest(f, lambda m: m["text"]["embed_tokens"].update(shape=[1024, 32])),
            "mixes stages",
        ),
    ],
)
def test_bad_engine_folders_say_what_to_do(tiny_engine, tmp_path, damage, message):
    folder = _copy(tiny_engine, tmp_path)
    damage(folder)
    with pytest.raises(EngineError, match=message) as info:
        Engine.load(folder)
    assert info.value.hint


def test_missing_folder_and_interrupted_export(tmp_path):
    with pytest.raises(EngineError, match="does not exist"):
        Engine.load(tmp_path / "nope")
    (tmp_path / "eng").mkdir()
    (tmp_path / ".eng.partial").mkdir()
    with pytest.raises(EngineError, match="interrupted"):
        Engine.load(tmp_path / "eng")


def test_stage_from_another_model_is_refused(tiny_engine, smol_engine, tmp_path):
    folder = _copy(tiny_engine, tmp_path)
    for f in smol_engine.glob("audio.onnx*"):
        shutil.copy(f, folder / f.name)
    pipe = Pipeline.from_engine(folder)
    with pytest.raises(EngineError, match="another model"):
        pipe.runner("audio")


def test_damaged_graph_file(tiny_engine, tmp_path):
    folder = _copy(tiny_engine, tmp_path)
    (folder / "vision.onnx").write_bytes(b"garbage")
    pipe = Pipeline.from_engine(folder)
    with pytest.raises(EngineError, match="cannot load vision.onnx"):
        pipe.runner("vision")


def test_an_engine_quantized_for_an_older_onnxruntime_says_to_quantize_again(tmp_path):
    """int8-compute engines written before 2026-12-08 stored MatMulNBits' B as (N, K): ONNX Runtime
    1.24 took it, later releases refuse the graph - the error says what to do."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from vinci_edge.runtime.backend import SessionSettings, make_session

    n, k = 32, 64
    node = helper.make_node(
        "MatMulNBits", ["x", "w", "s"], ["y"], domain="com.microsoft", K=k, N=n, bits=8, block_size=32
    )
    graph = helper.make_graph(
        [node],
        "old_int8_compute_layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(np.full((n, k), 128, np.uint8), "w"),  # 2-D, as written before
         numpy_helper.from_array(np.ones(n * k // 32, np.float32), "s")],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=10), tmp_path / "decoder.onnx")
    try:
        make_session(tmp_path / "decoder.onnx", SessionSettings(threads=1))
    except EngineError as exc:
        assert "quantize it again" in (exc.hint or ""), exc.hint
    else:
        pytest.skip(f"ONNX Runtime {ort.__version__} still takes a 2-D MatMulNBits weight")


def test_missing_stage_for_the_request(tiny_ckpt, tmp_path, clip):
    from vinci_edge.export.engine import export_engine

    export_engine(tiny_ckpt, tmp_path / "dec", stages=["decoder"])
    pipe = Pipeline.from_engine(tmp_path / "dec")
    assert pipe.ask("Hi", GenerationConfig(max_new_tokens=2)).token_ids is not None
    with pytest.raises(EngineError, match="has a video, but this engine has no 'vision' stage"):
        pipe.ask("What?", video=clip)


def test_prompt_longer_than_the_context(tiny_engine, clip, capsys):
    pipe = Pipeline.from_engine(tiny_engine, context=64)
    with pytest.raises(PromptError, match="decoder context is 64"):
        pipe.ask("What happens?", video=clip)
    # the answer is cut to fit, with a warning, when only the answer does not fit
    short = Pipeline.from_engine(tiny_engine, context=40)
    ans = short.ask("Hi", GenerationConfig(max_new_tokens=500, ignore_eos=True))
    assert ans.prompt_tokens + len(ans.token_ids) <= 40 and ans.warnings
    # and the CLI says it in one line
    assert (
        run(
            [
                "run",
                "--engine",
                str(tiny_engine),
                "--context",
                "64",
                "--video",
                str(clip),
                "--prompt",
                "What?",
            ]
        )
        == 2
    )
    assert "decoder context is 64" in capsys.readouterr().err


def test_unavailable_provider_and_existing_output(tiny_engine, tiny_ckpt):
    with pytest.raises(EngineError, match="not available"):
        Pipeline.from_engine(tiny_engine, provider="tensorrt")
    from vinci_edge.export.engine import export_engine

    with pytest.raises(EngineError, match="already exists"):
        export_engine(tiny_ckpt, tiny_engine)


def test_failed_export_leaves_nothing_behind(tiny_ckpt, tmp_path):
    from vinci_edge.export.engine import export_engine

    with pytest.raises(EngineError):
        export_engine(tiny_ckpt, tmp_path / "x", stages=["vision", "nonsense"])
    # a failure after the towers were written (the LLM weights are gone) removes the partial folder
    broken = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, broken)
    (broken / "llm" / "model.safetensors").unlink()
    from vinci_edge.errors import CheckpointError

    with pytest.raises(CheckpointError):
        export_engine(broken, tmp_path / "y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_fp16_engine_runs_and_stays_close(tiny_ckpt, tiny_pair, tmp_path, clip):
    """fp16 engines are for GPU providers; ONNX Runtime's CPU provider still runs them (casting
    most ops to fp32), so their accuracy is checked here. Tolerance: 2% of the logit range."""
    from vinci_edge.export.engine import export_engine

    ref, _ = tiny_pair
    export_engine(tiny_ckpt, tmp_path / "fp16", dtype="float16")
    pipe = Pipeline.from_engine(tmp_path / "fp16")
    req = ref.prepare("What happens?", video=clip)
    expect = ref.inputs_embeds(req)
    got = pipe.inputs_embeds(req, Metrics())
    assert got.dtype == np.float16
    assert np.abs(got.astype(np.float32) - expect.numpy()).max() <= 2e-3 * float(expect.abs().max())
    with torch.inference_mode():
        ref_logits, _ = ref.model.prefill(expect)
    pipe.decoder.reset()
    logits = pipe.decoder.append(got)
    assert np.abs(logits - ref_logits.numpy()).max() <= 0.02 * float(ref_logits.abs().max())


def test_a_file_given_as_the_engine_says_so(tmp_path, capsys):
    not_a_folder = tmp_path / "decoder.onnx"
    not_a_folder.write_bytes(b"\x08\x07")
    assert run(["run", "--engine", str(not_a_folder), "--prompt", "Hi"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not an engine folder" in err and "Traceback" not in err
