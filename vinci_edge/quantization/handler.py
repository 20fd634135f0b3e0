"""What every precision handler takes and returns.

A handler turns one fp32 stage graph into its quantized variant. The model and export code never see
handlers: a handler reads the exported graph, writes a new one, and says what it did (for the
manifest). One handler per precision, in int8.py, int8_compute.py, fp8.py and int4.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vinci_edge.manifest import DecoderSpec, PrefillGraph, StageEntry
from vinci_edge.progress import Progress, silent
from vinci_edge.quantization.calibration import CalibrationSet


@dataclass
class StageJob:
    stage: str  # vision | image_projector | audio | decoder
    src: Path  # the fp32 stage graph
    dst: Path  # where the quantized graph goes (inside the engine's .partial folder)
    workdir: Path  # scratch space, removed afterwards
    entry: StageEntry  # the stage's manifest entry in the fp32 engine
    calibration: CalibrationSet | None = None
    smoothquant: float | None = None  # SmoothQuant alpha (decoder, INT8 precisions)
    keep_fp32: tuple[str, ...] = ()  # decoder layer kinds left out of static int8 / fp8 (DECODER_LAYERS)
    head_bits: int = 8  # the LM head's weight bits at int4 (8, or 4 for speed: int4.py)
    say: Progress = silent

    @property
    def spec(self) -> DecoderSpec | None:
        """The decoder spec (KV shapes for calibration feeds); None for the towers."""
        return self.entry.decoder


@dataclass
class StageResult:
    method: str  # how, in a few words
    tool: str  # the library that did it
    tool_version: str
    external_data: str | None = None  # name of the .data file, if any
    ort_optimization: str = "all"  # the ONNX Runtime optimisation level the graph needs
    details: dict[str, Any] = field(default_factory=dict)
    prefill: PrefillGraph | None = None  # a decoder prefill graph written beside `dst` (int8_compute.py)


class Handler(Protocol):
    precision: str
    tool: str

    def needs_calibration(self, job: StageJob) -> bool: ...

    def check_available(self) -> None:
        """Raise MissingDependencyError now, before any stage is written."""
        ...

    def run(self, job: StageJob) -> StageResult: ...
