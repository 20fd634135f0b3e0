"""An engine as a Triton model repository, for a standalone `tritonserver` on a GPU host.

    vinci-edge serve --engine engine/ --export-repo repo/ [--tensorrt]
    tritonserver --model-repository repo/            # then: vinci-edge serve-client --server HOST:8001

The repository serves the protocol of `vinci-edge serve` (vinci_edge/serve/server.py), so one client talks
to either:

    vision, audio   the engine's encoder graphs on Triton's onnxruntime backend, dynamic batching
                    across cameras (max_batch_size, max_queue_delay); optionally through TensorRT
                    (`tensorrt=True`: the ORT TensorRT execution accelerator)
    media           Python backend; a sequence batcher whose CONTROL_SEQUENCE_CORRID is the camera's
                    sequence number (requests of one camera in order, one camera per sequence slot)
    ask             Python backend, decoupled: the answer streams back piece by piece
    stats           Python backend
    vinci_core      Python backend, decoupled: the cameras' live sessions and the decoder. Triton
                    runs each Python model in a process of its own, so one model must hold the
                    per-camera state: media, ask and stats forward their requests to it (BLS), and
                    its sessions encode through the vision and audio models (BLS again, so Triton
                    batches frames of different cameras together).

`vinci_core/1/engine/` is a copy of the engine (its decoder, tokenizer and text table); the encoder
graphs are copied to `vision/1/model.onnx` and `audio/1/model.onnx` (links instead with `link=True`).
`encoders="python"` serves the encoders from the Python backend with ONNX Runtime instead, for a
Triton without the onnxruntime backend (PyTriton's `tritonserver` ships only the Python one).

Each config.pbtxt is built as a dict and checked against Triton's ModelConfig protobuf before
anything is written, and the folder is written under the output-folder rule
(`vinci_edge.output_folder`): checked before any work, written beside it and renamed into place,
and an existing folder replaced (with `force`) only when it is a repository this function wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from vinci_edge import stages as st
from vinci_edge.errors import EngineError, MissingDependencyError
from vinci_edge.manifest import MANIFEST, Manifest, StageEntry, TensorInfo
from vinci_edge.output_folder import FolderKind, OutputFolderError, output_folder
from vinci_edge.progress import Progress, silent

FORMAT = "vinci-edge-triton-repository"
MARKER = "vinci_edge_repository.json"  # what tells a repository this module wrote
CORE = "vinci_core"
ENCODERS = (st.VISION, st.AUDIO)
TEMPLATES = Path(__file__).parent / "repository_models"
DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "int64": "TYPE_INT64"}


class RepositoryFolderError(OutputFolderError):
    """The repository's output folder is refused."""


def is_repository_folder(folder: Path) -> bool:
    """A model repository this module wrote (its marker file names the format)."""
    try:
        return json.loads((folder / MARKER).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


REPOSITORY = FolderKind("a vinci-edge model repository", is_repository_folder, RepositoryFolderError)


@dataclass(frozen=True)
class RepositoryOptions:
    encoders: Literal["onnxruntime", "python"] = "onnxruntime"  # which backend serves vision / audio
    tensorrt: bool = False  # the onnxruntime models run through ORT's TensorRT accelerator
    tensorrt_fp16: bool = True  # with tensorrt: precision_mode FP16
    gpu: bool = True  # encoder instances on the GPU (KIND_GPU); False: KIND_CPU
    encoder_instances: int = 1
    vision_max_batch: int = 16
    audio_max_batch: int = 8
    max_queue_delay_us: int = 2000  # how long the encoders' batcher waits to fill a batch
    max_streams: int = 8  # cameras served at once (sequence slots and the core's admission limit)
    expire_seconds: float = 60.0  # a camera silent this long is freed
    decoder_provider: str = "cuda"  # ONNX Runtime provider of the decoder inside vinci_core
    live: dict[str, Any] = field(default_factory=dict)  # LiveOptions fields for every camera (fps, ...)
    python_path: tuple[str, ...] | None = None  # prepended to sys.path in the Python models
    link: bool = False  # link the engine's files instead of copying them (same host only)
    force: bool = False  # replace a repository this function wrote before

    def __post_init__(self) -> None:
        checks = [
            (self.encoders in ("onnxruntime", "python"), "encoders must be 'onnxruntime' or 'python'"),
            (self.encoder_instances >= 1, "encoder_instances must be at least 1"),
            (self.vision_max_batch >= 1 and self.audio_max_batch >= 1, "max batch sizes must be at least 1"),
            (self.max_queue_delay_us >= 0, "max_queue_delay_us must be >= 0"),
            (self.max_streams >= 1, "max_streams must be at least 1"),
            (self.expire_seconds > 0, "expire_seconds must be above 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def export_repository(
    engine_dir: str | Path,
    out_dir: str | Path,
    options: RepositoryOptions | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write the model repository for the engine in `engine_dir` into `out_dir`; returns its path."""
    options = options or RepositoryOptions()
    say = progress or silent
    engine_dir = Path(engine_dir)
    manifest = _read_engine(engine_dir)
    configs = repository_configs(manifest, options)  # every config checked before any write
    with output_folder(out_dir, kind=REPOSITORY, force=options.force, inputs={"engine": engine_dir}) as tmp:
        for name, config in configs.items():
            _write_model(tmp, name, config, engine_dir, manifest, options)
            say(f"{name}: {config.get('backend') or config.get('platform')}")
        _place(engine_dir, tmp / CORE / "1" / "engine", options.link)
        (tmp / MARKER).write_text(json.dumps(_marker(engine_dir, manifest, options), indent=2) + "\n")
    return Path(os.path.abspath(out_dir))


def _read_engine(engine_dir: Path) -> Manifest:
    if not (engine_dir / MANIFEST).is_file():
        raise EngineError(
            f"{engine_dir} has no {MANIFEST}: it is not a vinci-edge engine",
            hint="give an engine folder (vinci-edge export)",
        )
    manifest = Manifest.read(engine_dir)
    for name in (st.VISION, st.DECODER):
        if name not in manifest.stages:
            raise EngineError(
                f"serving live cameras needs the {name} stage; this engine has {', '.join(manifest.stages)}",
                hint="export the engine with all stages",
            )
    return manifest


# ---- the configs ---------------------------------------------------------------------------------------
def repository_configs(manifest: Manifest, options: RepositoryOptions) -> dict[str, dict[str, Any]]:
    """Every model's config as a dict (the protobuf's field names), each checked by `to_pbtxt`."""
    configs: dict[str, dict[str, Any]] = {}
    for name in ENCODERS:
        if name in manifest.stages:
            configs[name] = encoder_config(name, manifest.stages[name], options)
    configs["media"] = media_config(options)
    configs["ask"] = ask_config(options)
    configs["stats"] = stats_config(options)
    configs[CORE] = core_config(manifest, options)
    for config in configs.values():
        to_pbtxt(config)
    return configs


def encoder_config(name: str, stage: StageEntry, options: RepositoryOptions) -> dict[str, Any]:
    """vision / audio: the stage graph with dynamic batching across cameras; the batch axis is the
    graph's first (dynamic) axis, the other dims come from the manifest."""
    max_batch = options.vision_max_batch if name == st.VISION else options.audio_max_batch
    config: dict[str, Any] = {
        "name": name,
        "max_batch_size": max_batch,
        "input": [_tensor(t, stage.dtype) for t in stage.inputs],
        "output": [_tensor(t, stage.dtype) for t in stage.outputs],
        "dynamic_batching": {"max_queue_delay_microseconds": options.max_queue_delay_us},
        "instance_group": [
            {"count": options.encoder_instances, "kind": "KIND_GPU" if options.gpu else "KIND_CPU"}
        ],
    }
    if options.encoders == "onnxruntime":
        config["platform"] = "onnxruntime_onnx"
        config["backend"] = "onnxruntime"
        if options.tensorrt:
            config["optimization"] = {
                "execution_accelerators": {"gpu_execution_accelerator": [_tensorrt(options)]}
            }
    else:
        config["backend"] = "python"
        config["instance_group"][0]["kind"] = "KIND_CPU"  # ORT picks its own device in the model
        config["parameters"] = _parameters(options, stage_file=stage.file, provider=options.decoder_provider)
    return config


def _tensorrt(options: RepositoryOptions) -> dict[str, Any]:
    params = {"max_workspace_size_bytes": "1073741824"}
    if options.tensorrt_fp16:
        params["precision_mode"] = "FP16"
    return {"name": "tensorrt", "parameters": params}


def _tensor(info: TensorInfo, graph_dtype: str) -> dict[str, Any]:
    """A graph tensor without its batch axis: named axes are -1 (any size)."""
    if not info.shape:
        raise EngineError(f"the manifest gives no shape for {info.name}", hint="re-export the engine")
    dims = [d if isinstance(d, int) else -1 for d in info.shape[1:]]
    dtype = DTYPES.get(info.dtype or graph_dtype)
    if dtype is None:
        raise EngineError(f"{info.name} has dtype {info.dtype}, which the repository cannot serve")
    return {"name": info.name, "data_type": dtype, "dims": dims}


def _io(name: str, dtype: str, dims: list[int], optional: bool = False) -> dict[str, Any]:
    tensor: dict[str, Any] = {"name": name, "data_type": dtype, "dims": dims}
    if optional:
        tensor["optional"] = True
    return tensor


def media_config(options: RepositoryOptions) -> dict[str, Any]:
    """`media`: one sequence per camera, the oldest strategy so requests of several cameras run
    together, a camera idle for `expire_seconds` released. The CORRID control is the camera's
    sequence number (`client_transport.sequence_number(camera)`), not the camera id as a string:
    Triton 2.51 pads a string CORRID to 128 bytes, which the Python backend then reads as two
    strings and refuses ("unexpected number of string elements 2 for inference input 'CORRID'",
    triton-inference-server/core#339); the camera id itself travels in the `camera` input."""
    return {
        "name": "media",
        "backend": "python",
        "max_batch_size": options.max_streams,
        "input": [
            _io("camera", "TYPE_STRING", [1]),
            _io("kind", "TYPE_STRING", [1]),
            _io("t", "TYPE_FP64", [1]),
            _io("frame", "TYPE_UINT8", [-1, -1, 3], optional=True),
            _io("samples", "TYPE_FP32", [-1], optional=True),
        ],
        "output": [_io("status", "TYPE_STRING", [1])],
        "sequence_batching": {
            "max_sequence_idle_microseconds": int(options.expire_seconds * 1_000_000),
            # more slots than streams: a camera past the limit reaches the core and is refused with
            # the reason (with exactly max_streams slots Triton would hold its `start` in a backlog)
            "oldest": {"max_candidate_sequences": 2 * options.max_streams, "max_queue_delay_microseconds": 0},
            "control_input": [
                {
                    "name": "CORRID",
                    "control": [{"kind": "CONTROL_SEQUENCE_CORRID", "data_type": "TYPE_UINT64"}],
                },
                {"name": "START", "control": [{"kind": "CONTROL_SEQUENCE_START", "fp32_false_true": [0, 1]}]},
                {"name": "END", "control": [{"kind": "CONTROL_SEQUENCE_END", "fp32_false_true": [0, 1]}]},
            ],
        },
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "parameters": _parameters(options, relay="media"),
    }


def ask_config(options: RepositoryOptions) -> dict[str, Any]:
    return {
        "name": "ask",
        "backend": "python",
        "max_batch_size": 0,
        "model_transaction_policy": {"decoupled": True},
        "input": [
            _io("camera", "TYPE_STRING", [1]),
            _io("question", "TYPE_STRING", [1]),
            _io("max_new_tokens", "TYPE_INT32", [1], optional=True),
            _io("until", "TYPE_FP64", [1], optional=True),
        ],
        "output": [_io("text", "TYPE_STRING", [1]), _io("final", "TYPE_STRING", [1])],
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "parameters": _parameters(options, relay="ask"),
    }


def stats_config(options: RepositoryOptions) -> dict[str, Any]:
    return {
        "name": "stats",
        "backend": "python",
        "max_batch_size": 0,
        "input": [_io("what", "TYPE_STRING", [1])],
        "output": [_io("stats", "TYPE_STRING", [1])],
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "parameters": _parameters(options, relay="stats"),
    }


def core_config(manifest: Manifest, options: RepositoryOptions) -> dict[str, Any]:
    """`vinci_core`: every operation of the protocol, decoupled so a long answer holds nothing up."""
    return {
        "name": CORE,
        "backend": "python",
        "max_batch_size": 0,
        "model_transaction_policy": {"decoupled": True},
        "input": [
            _io("op", "TYPE_STRING", [1]),
            _io("camera", "TYPE_STRING", [1], optional=True),
            _io("kind", "TYPE_STRING", [1], optional=True),
            _io("t", "TYPE_FP64", [1], optional=True),
            _io("frame", "TYPE_UINT8", [-1, -1, 3], optional=True),
            _io("samples", "TYPE_FP32", [-1], optional=True),
            _io("question", "TYPE_STRING", [1], optional=True),
            _io("max_new_tokens", "TYPE_INT32", [1], optional=True),
            _io("until", "TYPE_FP64", [1], optional=True),
        ],
        "output": [
            _io("status", "TYPE_STRING", [1]),
            _io("text", "TYPE_STRING", [1]),
            _io("final", "TYPE_STRING", [1]),
        ],
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "parameters": _parameters(
            options,
            engine="engine",
            encoders=json.dumps(_served_stages(manifest, options), sort_keys=True),
            provider=options.decoder_provider,
            max_streams=str(options.max_streams),
            expire_seconds=str(options.expire_seconds),
            live=json.dumps(options.live, sort_keys=True),
        ),
    }


def _served_stages(manifest: Manifest, options: RepositoryOptions) -> dict[str, dict[str, Any]]:
    """What the core's sessions send to the vision / audio models: input, output, dtype, batch."""
    served = {}
    for name in ENCODERS:
        if name in manifest.stages:
            stage = manifest.stages[name]
            max_batch = options.vision_max_batch if name == st.VISION else options.audio_max_batch
            served[name] = {
                "input": stage.inputs[0].name,
                "output": "tokens",
                "dtype": stage.inputs[0].dtype or stage.dtype,
                "max_batch": max_batch,
            }
    return served


def _parameters(options: RepositoryOptions, **values: str) -> dict[str, Any]:
    """Config parameters (strings); every Python model gets the sys.path entries it needs."""
    values = {"python_path": os.pathsep.join(_python_path(options)), **values}
    return {k: {"string_value": v} for k, v in values.items()}


def _python_path(options: RepositoryOptions) -> tuple[str, ...]:
    """Where the Python models find vinci_edge and its dependencies: given, or this interpreter's
    (the package's parent folder and site-packages: right for a Triton on this host)."""
    if options.python_path is not None:
        return options.python_path
    package_root = str(Path(__file__).resolve().parents[2])
    return (
        package_root,
        *site.getsitepackages(),
        *([site.getusersitepackages()] if site.ENABLE_USER_SITE else []),
    )


def to_pbtxt(config: dict[str, Any]) -> str:
    """The config as Triton's text format, checked against Triton's ModelConfig message (an
    unknown field or a wrong enum is an error here, not when tritonserver loads it)."""
    try:
        from google.protobuf import json_format, text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise MissingDependencyError(
            f"writing a Triton model repository needs tritonclient ({exc.name} is missing)",
            hint="pip install 'vinci-edge[serve]'",
        ) from None
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    return text_format.MessageToString(message)


# ---- writing ---------------------------------------------------------------------------------------------
def _write_model(
    root: Path,
    name: str,
    config: dict[str, Any],
    engine_dir: Path,
    manifest: Manifest,
    options: RepositoryOptions,
) -> None:
    model_dir = root / name
    version = model_dir / "1"
    version.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(to_pbtxt(config))
    if name in ENCODERS and options.encoders == "onnxruntime":
        stage = manifest.stages[name]
        _place(engine_dir / stage.file, version / "model.onnx", options.link)
        if stage.external_data:  # the graph names its weights file: it sits beside it, same name
            _place(engine_dir / stage.external_data, version / stage.external_data, options.link)
        return
    template = "encoder.py" if name in ENCODERS else ("core.py" if name == CORE else "relay.py")
    shutil.copyfile(TEMPLATES / template, version / "model.py")


def _place(source: Path, target: Path, link: bool) -> None:
    if link:
        target.symlink_to(source.resolve(), target_is_directory=source.is_dir())
    elif source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)


def _marker(engine_dir: Path, manifest: Manifest, options: RepositoryOptions) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "engine": str(engine_dir.resolve()),
        "model_id": manifest.model_id,
        "options": {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(options).items() if k != "force"
        },
        "python": sys.version.split()[0],
    }
