"""The Triton model repository of `vinci-edge serve --export-repo` (vinci_edge/serve/repository.py):
its configs are Triton ModelConfig messages with the engine's shapes, the folder follows the
output-folder rule, and the real `tritonserver` (PyTriton's) loads it and serves a camera end to end.

What cannot run here: PyTriton's server ships only the Python backend, so the onnxruntime-backend
`vision` / `audio` models are checked by Triton's own config validation (the load fails on the
missing backend library, not on the config), and served end to end in their Python-backend form
(`encoders="python"`: the same graphs through ONNX Runtime inside the Python backend). TensorRT
needs a GPU: its accelerator block is checked as config only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from triton_helpers import log_of, tritonserver

from vinci_edge.manifest import Manifest
from vinci_edge.serve.repository import (
    CORE,
    MARKER,
    RepositoryFolderError,
    RepositoryOptions,
    export_repository,
    is_repository_folder,
)

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed (the serve extra)")

from google.protobuf import text_format  # noqa: E402  (tritonclient brings protobuf)
from tritonclient.grpc import model_config_pb2  # noqa: E402

MODELS = ("vision", "audio", "media", "ask", "stats", CORE)


def parse(repo: Path, name: str) -> model_config_pb2.ModelConfig:
    """A model's config.pbtxt parsed strictly (an unknown field or enum value is an error)."""
    return text_format.Parse((repo / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def repo(tiny_engine, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("repo") / "triton"
    return export_repository(tiny_engine, out, RepositoryOptions(tensorrt=True, max_streams=4))


# ---- the configs ---------------------------------------------------------------------------------------
def test_every_model_has_a_triton_config_and_its_files(repo):
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == sorted(MODELS)
    for name in MODELS:
        assert parse(repo, name).name == name
    assert (repo / "vision" / "1" / "model.onnx").is_file()
    assert (repo / "audio" / "1" / "model.onnx").is_file()
    for name in ("media", "ask", "stats", CORE):
        assert (repo / name / "1" / "model.py").is_file()
    assert (repo / CORE / "1" / "engine" / "manifest.json").is_file()
    assert is_repository_folder(repo)


def test_the_encoders_batch_with_the_engines_shapes(repo, tiny_engine):
    stages = Manifest.read(tiny_engine).stages
    for name, max_batch in (("vision", 16), ("audio", 8)):
        config = parse(repo, name)
        assert config.platform == "onnxruntime_onnx" and config.backend == "onnxruntime"
        assert config.max_batch_size == max_batch
        assert config.dynamic_batching.max_queue_delay_microseconds == 2000
        # dims are the manifest's without the (dynamic) batch axis
        for tensors, infos in ((config.input, stages[name].inputs), (config.output, stages[name].outputs)):
            assert [t.name for t in tensors] == [i.name for i in infos]
            for tensor, info in zip(tensors, infos, strict=True):
                assert list(tensor.dims) == info.shape[1:]
                assert model_config_pb2.DataType.Name(tensor.data_type) == "TYPE_FP32"
        accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert [a.name for a in accelerators] == ["tensorrt"]
        assert accelerators[0].parameters["precision_mode"] == "FP16"
    assert list(parse(repo, "vision").input[0].dims) == [3, 56, 56]
    assert list(parse(repo, "audio").output[0].dims) == [750, 64]


def test_media_is_a_sequence_per_camera_and_ask_streams(repo):
    media = parse(repo, "media")
    assert media.backend == "python" and media.max_batch_size == 4
    controls = {c.name: c.control[0] for c in media.sequence_batching.control_input}
    kind = model_config_pb2.ModelSequenceBatching.Control.Kind
    assert kind.Name(controls["CORRID"].kind) == "CONTROL_SEQUENCE_CORRID"
    assert model_config_pb2.DataType.Name(controls["CORRID"].data_type) == "TYPE_UINT64"  # core#339
    assert kind.Name(controls["START"].kind) == "CONTROL_SEQUENCE_START"
    assert media.sequence_batching.oldest.max_candidate_sequences == 8  # room to refuse a 5th camera
    assert media.sequence_batching.max_sequence_idle_microseconds == 60_000_000
    assert [t.name for t in media.input] == ["camera", "kind", "t", "frame", "samples"]
    assert [t.optional for t in media.input] == [False, False, False, True, True]

    ask = parse(repo, "ask")
    assert ask.model_transaction_policy.decoupled and ask.backend == "python"
    assert [t.name for t in ask.output] == ["text", "final"]
    core = parse(repo, CORE)
    assert core.model_transaction_policy.decoupled
    served = json.loads(core.parameters["encoders"].string_value)
    assert served["vision"] == {
        "input": "pixel_values",
        "output": "tokens",
        "dtype": "float32",
        "max_batch": 16,
    }


def test_without_tensorrt_no_accelerator_and_python_encoders(tiny_engine, tmp_path):
    plain = export_repository(tiny_engine, tmp_path / "plain", RepositoryOptions(gpu=False))
    vision = parse(plain, "vision")
    assert not vision.optimization.execution_accelerators.gpu_execution_accelerator
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(vision.instance_group[0].kind) == "KIND_CPU"

    python = export_repository(tiny_engine, tmp_path / "python", RepositoryOptions(encoders="python"))
    vision = parse(python, "vision")
    assert vision.backend == "python" and vision.max_batch_size == 16 and not vision.platform
    assert (python / "vision" / "1" / "model.py").is_file()
    assert not (python / "vision" / "1" / "model.onnx").exists()


# ---- the output-folder rule -------------------------------------------------------------------------------
def test_the_folder_follows_the_output_folder_rule(tiny_engine, tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(RepositoryFolderError, match="--force will not replace it"):
        export_repository(tiny_engine, theirs, RepositoryOptions(force=True))
    assert (theirs / "notes.txt").read_text() == "mine" and len(list(theirs.iterdir())) == 1

    with pytest.raises(RepositoryFolderError, match="inside the input engine"):
        export_repository(tiny_engine, tiny_engine / "repo")

    ours = export_repository(tiny_engine, tmp_path / "ours")
    with pytest.raises(RepositoryFolderError, match="already exists"):
        export_repository(tiny_engine, ours)
    (ours / "stale.txt").write_text("from the last export")
    export_repository(tiny_engine, ours, RepositoryOptions(force=True))  # ours: replaced
    assert not (ours / "stale.txt").exists() and (ours / MARKER).is_file()
    assert not list(tmp_path.glob(".*partial")) and not list(tmp_path.glob(".*replaced"))


def test_an_engine_without_vision_is_refused_before_any_write(tmp_path):
    from vinci_edge.errors import EngineError

    with pytest.raises(EngineError, match="not a vinci-edge engine"):
        export_repository(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---- the real tritonserver ---------------------------------------------------------------------------
def test_tritonserver_accepts_the_onnxruntime_configs_and_lacks_only_the_backend(repo, tmp_path):
    """PyTriton's server has no onnxruntime backend: loading `vision` must fail on that alone,
    after Triton validated its config (an invalid config fails before the backend is looked up)."""
    with tritonserver(repo, tmp_path, "--model-control-mode=explicit", "--load-model=stats", ready_s=60) as (
        url,
        proc,
    ):
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        client = grpcclient.InferenceServerClient(url)
        try:
            for name in ("vision", "audio"):
                with pytest.raises(InferenceServerException) as failure:
                    client.load_model(name)
                message = str(failure.value)
                assert "onnxruntime" in message, message
                assert "config" not in message.lower() or "backend" in message.lower(), message
        finally:
            client.close()
    assert "libtriton_onnxruntime.so" in log_of(tmp_path) or "onnxruntime" in log_of(tmp_path)


@pytest.fixture(scope="module")
def served(tiny_engine, tmp_path_factory):
    """The repository with Python-backend encoders, on the real tritonserver (the core runs the
    same `Streams` as `vinci-edge serve`)."""
    pytest.importorskip("vinci_edge.serve.streams", reason="the server side (branch serve) is not merged")
    work = tmp_path_factory.mktemp("triton")
    options = RepositoryOptions(
        encoders="python",
        gpu=False,
        decoder_provider="cpu",
        max_streams=2,
        live={"fps": 1.0, "chunk_seconds": 2.0, "max_new_tokens": 8},
    )
    repo = export_repository(tiny_engine, work / "repo", options)
    with tritonserver(repo, work) as (url, proc):
        if proc.poll() is not None:
            pytest.fail(f"tritonserver exited ({proc.returncode}):\n{log_of(work)[-4000:]}")
        yield url, work


def test_tritonserver_serves_a_camera_end_to_end(served, clip):
    import tritonclient.grpc as grpcclient

    from vinci_edge.live.sources import FileSource
    from vinci_edge.serve.client import RemoteSession

    url, work = served
    client = grpcclient.InferenceServerClient(url)
    try:
        for name in MODELS:
            assert client.is_model_ready(name), f"{name} is not ready:\n{log_of(work)[-3000:]}"
    finally:
        client.close()

    events: list[dict] = []
    with RemoteSession(url, "dock-1") as session:
        session.subscribe(events.append)
        session.start([FileSource(clip, realtime=False)])
        assert session.join(timeout=120), f"not taken in: {session.stats()}\n{log_of(work)[-3000:]}"
        answer = session.ask("What happens?", timeout=120)
        stats = session.stats()
    assert answer.token_ids and answer.media_until >= 3.0
    assert stats["server"]["segments"] >= 2 and stats["server"]["frames_encoded"] >= 4
    assert stats["frames_dropped"] == 0 and stats["refused"] == 0
    assert [e["type"] for e in events].count("answer") == 1
    assert not [e for e in events if e["type"] == "error"], events


def test_tritonserver_refuses_a_camera_past_the_limit_with_the_reason(served):
    from vinci_edge.serve.client_transport import ServerLink

    url, _ = served
    links = [ServerLink(url, f"cam-{i}") for i in range(3)]
    try:
        for link in links:
            link.connect()
        statuses = [link.media("start", 0.0) for link in links]
        assert [s["ok"] for s in statuses] == [True, True, False]
        assert "limit" in statuses[2]["reason"]
        frame = np.zeros((8, 8, 3), np.uint8)
        assert links[0].media("frame", 0.5, frame=frame)["ok"]
        bad = links[0].media("frame", 1.0, frame=np.zeros((8, 8), np.uint8))
        assert not bad["ok"] and "shape" in bad["reason"]
    finally:
        for link in links[:2]:
            link.media("end", 1.0)
        for link in links:
            link.close()


# ---- vinci-edge serve --export-repo ------------------------------------------------------------------------
def export_args(*argv: str):
    """The serve command's options that the export reads, plus repository_cli's own."""
    import argparse

    from vinci_edge.serve import repository_cli

    p = argparse.ArgumentParser()
    p.add_argument("--engine", type=Path)
    p.add_argument("--max-streams", type=int, default=8)
    p.add_argument("--expire-seconds", type=float, default=30.0)
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--chunk-seconds", type=float, default=2.0)
    p.add_argument("--max-new-tokens", type=int, default=64)
    repository_cli.add_arguments(p)
    return repository_cli, p.parse_args(argv)


def test_export_repo_takes_the_serve_commands_options(tiny_engine, tmp_path, capsys):
    cli, args = export_args(
        "--engine", str(tiny_engine), "--export-repo", str(tmp_path / "repo"), "--max-streams", "3",
        "--fps", "2", "--tensorrt", "--decoder-provider", "cpu",
    )  # fmt: skip
    assert cli.export_from_args(args) == 0
    repo = Path(capsys.readouterr().out.strip())
    assert parse(repo, "media").max_batch_size == 3
    core = parse(repo, CORE)
    assert json.loads(core.parameters["live"].string_value) == {
        "chunk_seconds": 2.0,
        "fps": 2.0,
        "max_new_tokens": 64,
    }
    assert core.parameters["provider"].string_value == "cpu"
    assert parse(repo, "vision").optimization.execution_accelerators.gpu_execution_accelerator

    cli, again = export_args("--engine", str(tiny_engine), "--export-repo", str(repo))
    with pytest.raises(RepositoryFolderError) as refused:  # the refusal names the option given
        cli.export_from_args(again)
    assert refused.value.message == f"{repo} already exists"
    assert refused.value.hint == "choose another --export-repo or pass --force to replace it"
