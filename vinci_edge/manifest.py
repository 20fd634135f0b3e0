"""manifest.json, typed: the only contract between export, quantization and the runtime.

An engine folder's manifest records the schema version, the whole model config, every stage's file
and I/O (names, shapes, dtypes), precision, opset, the decoder's spec, the CRTE and TEG parameters,
the source checkpoint's fingerprint, the export's id and the exporter versions. Export writes a
`Manifest`, quantization reads one and writes another, the runtime reads one and nothing else about
the model but what each stage graph says of its own provenance (STAGE_PROPS), checked against it.

`Manifest.read(folder)` checks every key it reads and refuses a folder it cannot honour with one
`EngineError` saying what to do: a missing or unreadable manifest, another format or schema version,
a hand-edited model config, a stage entry lacking a key or holding one of the wrong type. The JSON
layout is unchanged from schema 1 (engines written before this module load as they are).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vinci_edge.config import OmniVinciConfig
from vinci_edge.errors import ConfigError, EngineError
from vinci_edge.stages import DECODER, STAGE_NAMES

SCHEMA_VERSION = 1

# The decoder graphs an engine may hold, by name: "fused" (stages.decoder, ONNX Runtime's
# GroupQueryAttention with an in-place KV cache; attention "gqa") and "portable" (standard ONNX
# operators with the KV cache as explicit inputs and outputs, TensorRT's; attention "portable",
# recorded under the manifest's `decoder_graphs`). A backend runs the one BACKEND_DECODER names.
FUSED, PORTABLE = "fused", "portable"
DECODER_GRAPHS = (FUSED, PORTABLE)
ATTENTION = {FUSED: "gqa", PORTABLE: "portable"}
BACKEND_DECODER = {"ort-cpu": FUSED, "ort-cuda": FUSED, "tensorrt": PORTABLE}
FORMAT = "vinci-edge-engine"
MANIFEST = "manifest.json"
REEXPORT = "re-export it with `vinci-edge export --checkpoint CKPT --out DIR`"


def model_id(model_config: dict[str, Any]) -> str:
    """A stable hash of the model config: two engines with the same id are the same model."""
    blob = json.dumps(model_config, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# Stage provenance: what every stage graph says, in its ONNX metadata_props, about the export that
# wrote it. Export writes them, quantize copies them to the graphs it writes, and the runtime compares
# them with the manifest when it opens a session, so a stage file copied in from another engine
# folder is refused even when its shapes fit. The checkpoint fingerprint hashes configs and file
# sizes, so two seeds of one preset share it (and the model id): the export id, made once per export
# and recorded in the manifest's `source`, is what tells their graphs apart.

PROP_STAGE = "vinci_edge.stage"
PROP_MODEL_ID = "vinci_edge.model_id"
PROP_FINGERPRINT = "vinci_edge.source_fingerprint"
PROP_EXPORT_ID = "vinci_edge.export_id"
STAGE_PROPS = (PROP_STAGE, PROP_MODEL_ID, PROP_FINGERPRINT, PROP_EXPORT_ID)


def stage_props(stage: str, model_id: str, source: dict[str, Any]) -> dict[str, str]:
    """The props the graph of `stage` carries, from the model id and the manifest's `source`
    (fingerprint, export_id; a key the source lacks is left out)."""
    props = {
        PROP_STAGE: stage,
        PROP_MODEL_ID: model_id,
        PROP_FINGERPRINT: source.get("fingerprint"),
        PROP_EXPORT_ID: source.get("export_id"),
    }
    return {k: str(v) for k, v in props.items() if v is not None}


# --------------------------------------------------------------------------------------------------
# Entries


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: its name, and its shape (ints, or names of dynamic axes) and
    dtype when the exporter recorded them."""

    name: str
    shape: list[int | str] | None = None
    dtype: str | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str) -> TensorInfo:
        d = _object(d, where)
        return cls(_get(d, "name", str, where), _opt(d, "shape", list, where), _opt(d, "dtype", str, where))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.shape is not None:
            out["shape"] = self.shape
        if self.dtype is not None:
            out["dtype"] = self.dtype
        return out


@dataclass(frozen=True)
class DecoderSpec:
    """What the runtime needs to drive the decoder graph."""

    num_layers: int
    num_heads: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_context: int
    dtype: str  # "float32" | "float16"
    # "gqa": com.microsoft GroupQueryAttention, KV buffers shared in place (the fused graph);
    # "portable": standard operators, past (1, kv_heads, P, head_dim) in, present (.., P + S, ..) out
    attention: str = "gqa"

    @classmethod
    def from_dict(cls, d: Any, where: str) -> DecoderSpec:
        d = _object(d, where)
        ints = {k: _get(d, k, int, where) for k in _DECODER_INTS}
        return cls(**ints, dtype=_get(d, "dtype", str, where), attention=d.get("attention", "gqa"))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def input_names(self) -> list[str]:
        names = ["inputs_embeds"]
        if self.attention == "gqa":
            names += ["seqlens_k", "total_sequence_length"]
        for i in range(self.num_layers):
            names += [f"past_key_{i}", f"past_value_{i}"]
        return names


_DECODER_INTS = (
    "num_layers",
    "num_heads",
    "kv_heads",
    "head_dim",
    "hidden_size",
    "vocab_size",
    "max_context",
)


INTEGER_KERNELS = ("MatMulInteger", "MatMulIntegerToFloat")  # a prefill graph's integer GEMM operators


@dataclass(frozen=True)
class PrefillGraph:
    """A decoder graph for prefills beside the decoder stage's own (JSON key "prefill" of its entry):
    the same inputs, outputs and KV cache, other kernels for the same weights, in the same weights file
    (`int8-compute`: integer GEMMs with per-token activation scales, see quantization/int8_compute.py).
    The runtime runs it for appends of at least `min_positions` positions, the stage's graph for the
    rest. Engines without one run every append on the stage's graph."""

    file: str
    min_positions: int
    ort_optimization: str = "all"
    # The largest |q| of its int8 activations (63 at --int8-range reduced, 127 at full): the runtime
    # checks that the CPU's integer GEMM is exact at this range (runtime/integer_gemm.py). None in
    # engines written before it was recorded: checked at the full range.
    activation_levels: int | None = None
    # The integer GEMM operator its linear layers run ("MatMulIntegerToFloat"); None in engines
    # written before it was recorded, whose prefill graphs run "MatMulInteger".
    integer_kernel: str | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str) -> PrefillGraph:
        d = _object(d, where)
        n = _get(d, "min_positions", int, where)
        if n < 2:
            raise EngineError(f"the manifest's {where} min_positions {n} is below 2", hint=REEXPORT)
        levels = _opt(d, "activation_levels", int, where)
        if levels is not None and not 1 <= levels <= 127:
            raise EngineError(
                f"the manifest's {where} activation_levels {levels} is outside [1, 127]", hint=REEXPORT
            )
        kernel = _opt(d, "integer_kernel", str, where)
        if kernel is not None and kernel not in INTEGER_KERNELS:
            raise EngineError(
                f"the manifest's {where} integer_kernel {kernel!r} is not one of "
                f"{', '.join(INTEGER_KERNELS)}",
                hint=REEXPORT,
            )
        optimization = _opt(d, "ort_optimization", str, where) or "all"
        return cls(_get(d, "file", str, where), n, optimization, levels, kernel)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": self.file,
            "min_positions": self.min_positions,
            "ort_optimization": self.ort_optimization,
        }
        if self.activation_levels is not None:
            out["activation_levels"] = self.activation_levels
        if self.integer_kernel is not None:
            out["integer_kernel"] = self.integer_kernel
        return out


@dataclass
class StageEntry:
    """One stage graph of the engine."""

    file: str
    dtype: str  # the graph's float type: "float32" | "float16"
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    opset: int | None = None
    exporter: str | None = None
    external_data: str | None = None  # the weights file beside `file`, when the weights are outside it
    decoder: DecoderSpec | None = None  # the decoder stage's spec (JSON key "spec")
    precision: str | None = None  # set by quantize: "int8", "int4", ... (None: as exported)
    ort_optimization: str = "all"  # ONNX Runtime graph optimization the graph needs ("basic" for FP8)
    prefill: PrefillGraph | None = None  # the decoder's prefill graph, when quantize wrote one

    @classmethod
    def from_dict(cls, name: str, d: Any, where: str | None = None) -> StageEntry:
        where = where or f"stage '{name}'"
        d = _object(d, where)
        entry = cls(
            file=_get(d, "file", str, where),
            dtype=_get(d, "dtype", str, where),
            inputs=[TensorInfo.from_dict(t, f"{where} input") for t in _get(d, "inputs", list, where)],
            outputs=[TensorInfo.from_dict(t, f"{where} output") for t in _get(d, "outputs", list, where)],
            opset=_opt(d, "opset", int, where),
            exporter=_opt(d, "exporter", str, where),
            external_data=_opt(d, "external_data", str, where),
            precision=_opt(d, "precision", str, where),
            ort_optimization=_opt(d, "ort_optimization", str, where) or "all",
        )
        if name == DECODER:
            entry.decoder = DecoderSpec.from_dict(_get(d, "spec", dict, where), f"{where} spec")
            if d.get("prefill") is not None:
                entry.prefill = PrefillGraph.from_dict(d["prefill"], f"{where} prefill")
        return entry

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file, "dtype": self.dtype}
        for key in ("opset", "exporter"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["inputs"] = [t.to_dict() for t in self.inputs]
        out["outputs"] = [t.to_dict() for t in self.outputs]
        out["external_data"] = self.external_data
        if self.decoder is not None:
            out["spec"] = self.decoder.to_dict()
        if self.precision is not None:
            out["precision"] = self.precision
        if self.ort_optimization != "all":
            out["ort_optimization"] = self.ort_optimization
        if self.prefill is not None:
            out["prefill"] = self.prefill.to_dict()
        return out

    def output(self, name: str) -> TensorInfo | None:
        return next((o for o in self.outputs if o.name == name), None)


@dataclass(frozen=True)
class TextEntry:
    """The text embedding table (memory-mapped by the runtime) and the tokenizer folder."""

    embed_file: str
    embed_shape: tuple[int, int]
    embed_dtype: str
    tokenizer: str

    @classmethod
    def from_dict(cls, d: Any) -> TextEntry:
        d = _object(d, "text")
        embed = _object(_get(d, "embed_tokens", dict, "text"), "text.embed_tokens")
        shape = _get(embed, "shape", list, "text.embed_tokens")
        if len(shape) != 2 or not all(isinstance(n, int) for n in shape):
            raise EngineError(f"text.embed_tokens.shape {shape} is not (vocab, width)", hint=REEXPORT)
        return cls(
            _get(embed, "file", str, "text.embed_tokens"),
            (shape[0], shape[1]),
            _get(embed, "dtype", str, "text.embed_tokens"),
            _get(d, "tokenizer", str, "text"),
        )

    def to_dict(self) -> dict[str, Any]:
        embed = {"file": self.embed_file, "shape": list(self.embed_shape), "dtype": self.embed_dtype}
        return {"embed_tokens": embed, "tokenizer": self.tokenizer}


# --------------------------------------------------------------------------------------------------
# The manifest


@dataclass
class Manifest:
    model_config: dict[str, Any]
    stages: dict[str, StageEntry]  # by stage name (vinci_edge.stages), in export order
    text: TextEntry
    source: dict[str, Any]  # checkpoint path, fingerprint, LLM architecture, export_id
    exporters: dict[str, str]  # tool versions
    precision: dict[str, dict[str, Any]]  # per stage: dtype, precision, method, tool, calibration, ...
    created: str = ""
    teg: dict[str, Any] = field(default_factory=dict)  # written out for people; derived from the config
    crte: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] | None = None  # what `vinci-edge quantize` did, when it made this engine
    # decoder graphs beside the fused one (stages.decoder), by name: {"portable": entry}; engines
    # exported before the portable graph have none (see decoder_graph / decoder_for)
    decoder_graphs: dict[str, StageEntry] = field(default_factory=dict)
    config: OmniVinciConfig = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self.config = OmniVinciConfig.from_dict(self.model_config)
        except ConfigError as exc:
            raise EngineError(f"the engine's model config is invalid: {exc.message}", hint=REEXPORT) from exc

    @property
    def model_id(self) -> str:
        return model_id(self.model_config)

    @property
    def export_id(self) -> str | None:
        """The export that wrote the stage graphs; None for engines exported before the graphs
        carried their provenance (stage_props)."""
        return self.source.get("export_id")

    def stage_props(self, stage: str) -> dict[str, str]:
        """The provenance props the graph of `stage` must carry (see STAGE_PROPS)."""
        return stage_props(stage, self.model_id, self.source)

    @property
    def decoder(self) -> DecoderSpec:
        """The decoder stage's spec (the engine must have the decoder stage)."""
        entry = self.stages.get(DECODER)
        if entry is None or entry.decoder is None:
            raise EngineError("this engine has no decoder stage", hint=REEXPORT)
        return entry.decoder

    def decoder_graph(self, name: str = FUSED) -> StageEntry:
        """The decoder graph `name` ("fused": stages.decoder; "portable"), refused with what to do
        when this engine lacks it."""
        if name not in DECODER_GRAPHS:
            raise EngineError(
                f"unknown decoder graph {name!r}", hint=f"choose one of {', '.join(DECODER_GRAPHS)}"
            )
        entry = self.stages.get(DECODER) if name == FUSED else self.decoder_graphs.get(name)
        if entry is None or entry.decoder is None:
            has = ", ".join(self.decoder_graph_names) or "none"
            raise EngineError(
                f"this engine has no {name} decoder graph (it has: {has})",
                hint="re-export it with `vinci-edge export --checkpoint CKPT --out DIR` (which writes "
                "the fused and the portable decoder graphs)",
            )
        return entry

    @property
    def decoder_graph_names(self) -> list[str]:
        """The decoder graphs this engine holds, fused first."""
        return [FUSED] * (DECODER in self.stages) + list(self.decoder_graphs)

    def decoder_for(self, backend: str) -> StageEntry:
        """The decoder graph a backend runs (BACKEND_DECODER: "ort-cpu" / "ort-cuda" -> fused,
        "tensorrt" -> portable)."""
        if backend not in BACKEND_DECODER:
            raise EngineError(f"unknown backend {backend!r}", hint=f"backends: {', '.join(BACKEND_DECODER)}")
        return self.decoder_graph(BACKEND_DECODER[backend])

    def precision_of(self, stage: str) -> str:
        """ "fp32" / "fp16" as exported, else the quantized precision ("int8", "int4", ...)."""
        entry = self.stages[stage]
        return entry.precision or ("fp16" if entry.dtype == "float16" else "fp32")

    # ---- JSON ----------------------------------------------------------------------------------------
    @classmethod
    def read(cls, folder: str | Path) -> Manifest:
        """The manifest of an engine folder, every key checked (see the module docstring)."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise EngineError(f"{folder} has no {MANIFEST}: it is not a vinci-edge engine", hint=REEXPORT)
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EngineError(f"{path} is not valid JSON ({exc})", hint=REEXPORT) from exc
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, d: Any, where: str = MANIFEST) -> Manifest:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise EngineError(f"{where} is not a vinci-edge engine manifest", hint=REEXPORT)
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise EngineError(
                f"engine schema version {version} is not the one this runtime reads ({SCHEMA_VERSION})",
                hint="use the vinci-edge version that wrote it, or " + REEXPORT,
            )
        for key in ("model_config", "model_id", "stages", "text"):
            if key not in d:
                raise EngineError(f"{where} lacks '{key}'", hint=REEXPORT)
        if model_id(d["model_config"]) != d["model_id"]:
            raise EngineError(
                "the manifest's model config does not match its model id (edited by hand?)", hint=REEXPORT
            )
        stages = _object(d["stages"], "stages")
        unknown = [s for s in stages if s not in STAGE_NAMES]
        if unknown:
            raise EngineError(
                f"{where} names unknown stage(s) {unknown} (this runtime knows {', '.join(STAGE_NAMES)})",
                hint="use the vinci-edge version that wrote it, or " + REEXPORT,
            )
        return cls(
            model_config=_object(d["model_config"], "model_config"),
            stages={name: StageEntry.from_dict(name, e) for name, e in stages.items()},
            text=TextEntry.from_dict(d["text"]),
            source=_object(d.get("source", {}), "source"),
            exporters=_object(d.get("exporters", {}), "exporters"),
            precision=_object(d.get("precision", {}), "precision"),
            created=d.get("created", ""),
            teg=d.get("teg", {}),
            crte=d.get("crte", {}),
            quantization=d.get("quantization"),
            decoder_graphs=_decoder_graphs(d.get("decoder_graphs", {})),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "model_id": self.model_id,
            "model_config": self.model_config,
            "source": self.source,
            "exporters": self.exporters,
            "precision": self.precision,
            "stages": {name: e.to_dict() for name, e in self.stages.items()},
            "text": self.text.to_dict(),
            "teg": self.teg,
            "crte": self.crte,
        }
        if self.quantization is not None:
            out["quantization"] = self.quantization
        if self.decoder_graphs:
            out["decoder_graphs"] = {name: e.to_dict() for name, e in self.decoder_graphs.items()}
        return out

    def write(self, folder: Path) -> None:
        (folder / MANIFEST).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _decoder_graphs(d: Any) -> dict[str, StageEntry]:
    """The manifest's `decoder_graphs`: each a decoder stage entry (with its spec) of a known name,
    whose spec's attention is that graph's (ATTENTION)."""
    out = {}
    for name, e in _object(d, "decoder_graphs").items():
        where = f"decoder graph '{name}'"
        if name not in DECODER_GRAPHS or name == FUSED:
            raise EngineError(
                f"the manifest names an unknown {where} (this runtime knows {PORTABLE})",
                hint="use the vinci-edge version that wrote it, or " + REEXPORT,
            )
        entry = StageEntry.from_dict(DECODER, e, where)
        if entry.decoder.attention != ATTENTION[name]:
            raise EngineError(
                f"the manifest's {where} has attention {entry.decoder.attention!r}, not {ATTENTION[name]!r}",
                hint=REEXPORT,
            )
        out[name] = entry
    return out


def timeline_params(cfg: OmniVinciConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The TEG and CRTE settings (`Manifest.teg`, `.crte`), written out for people and tools; the
    runtime derives them from the model config, so they can never disagree with it."""
    teg = {
        "load_audio_in_video": cfg.load_audio_in_video,
        "interleaved": cfg.interleaved_vis_aud_in_video,
        "segment_duration": cfg.segment_duration,
        "num_video_frames": cfg.num_video_frames,
        "audio_sampling_rate": cfg.audio_sampling_rate,
        "audio_hop_length": cfg.audio_hop_length,
        "audio_chunk_length": cfg.audio_chunk_length,
        "tokens_per_frame": cfg.tokens_per_frame,
        "audio_tokens_per_chunk": cfg.audio_tokens_per_chunk,
    }
    crte = {
        "video": cfg.video_encoder.time.to_dict() if cfg.video_encoder.time else None,
        "audio": cfg.sound_encoder.time.to_dict() if cfg.sound_encoder.time else None,
    }
    return teg, crte


# --------------------------------------------------------------------------------------------------
# Reading keys


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EngineError(f"the manifest's {where} is not an object", hint=REEXPORT)
    return value


def _get(d: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in d:
        raise EngineError(f"the manifest's {where} lacks '{key}'", hint=REEXPORT)
    return _typed(d[key], key, kind, where)


def _opt(d: dict[str, Any], key: str, kind: type, where: str) -> Any:
    return None if d.get(key) is None else _typed(d[key], key, kind, where)


def _typed(value: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EngineError(
            f"the manifest's {where} '{key}' is {type(value).__name__}, not {kind.__name__}", hint=REEXPORT
        )
    return value
