"""An engine's stage runners, each created on first use: a text-only question never loads the towers.

`EngineStages[name]` is what the modalities encode through (`vinci_edge.stages.Stages`) and where
the decoder comes from. Creating a session is timed into `load_metrics` (stage LOAD), apart from
any request, so a profiler reports load time on its own. Each graph is checked against the manifest
as its session is created (backend.py): the provenance it carries, its I/O and output widths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from vinci_edge import metrics as m
from vinci_edge import stages as st
from vinci_edge.errors import EngineError
from vinci_edge.manifest import FUSED, PORTABLE
from vinci_edge.runtime.backend import OrtStage, SessionSettings, resolve_provider
from vinci_edge.runtime.decoder import OrtDecoder
from vinci_edge.runtime.decoder_portable import PortableDecoder
from vinci_edge.runtime.engine import Engine

# Inputs per session call along axis 0: memory stays flat for long clips.
MAX_BATCH = {st.VISION: 8, st.AUDIO: 4}


class EngineStages:
    def __init__(
        self,
        engine: Engine,
        text_table: np.ndarray,
        provider: str = "cpu",
        stage_providers: dict[str, str] | None = None,
        threads: int = 0,
        context: int | None = None,
        load_metrics: Callable[[], m.Metrics] | None = None,
        decoder: str = FUSED,
    ) -> None:
        """`load_metrics` returns the Metrics that session creation is timed into (looked up at each
        creation, so a profiler can swap it). `decoder`: which decoder graph runs ("fused", or
        "portable" - TensorRT's graph on ONNX Runtime, to check its maths); refused here, before any
        session, when the engine lacks it."""
        unknown = sorted(set(stage_providers or {}) - set(st.STAGE_NAMES))
        if unknown:
            raise EngineError(
                f"stage provider(s) given for unknown stage(s) {', '.join(unknown)}",
                hint=f"the stages are {', '.join(st.STAGE_NAMES)}",
            )
        if st.DECODER in engine.stages:
            engine.manifest.decoder_graph(decoder)
        self.decoder_graph = decoder
        self.engine = engine
        self.text_table = text_table
        self.providers = {
            name: resolve_provider((stage_providers or {}).get(name, provider)) for name in engine.stages
        }
        self.threads = threads
        self.context = context
        self._load_metrics = load_metrics or m.Metrics
        self.runners: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self.runners:
            self.runners[name] = self._create(name)
        return self.runners[name]

    def _create(self, name: str) -> OrtStage | OrtDecoder | PortableDecoder:
        path = self.engine.stage_path(name)
        spec = self.engine.stages[name]
        if name == st.DECODER:
            spec = self.engine.manifest.decoder_graph(self.decoder_graph)
            path = self.engine.folder / spec.file
        settings = SessionSettings(
            provider=self.providers[name],
            threads=self.threads,
            optimization=spec.ort_optimization,
        )
        provenance = self.engine.manifest.stage_props(name)
        with self._load_metrics().stage(m.LOAD, stage=name) as attrs:
            if name == st.DECODER:
                if self.decoder_graph == PORTABLE:
                    runner = PortableDecoder(
                        path, spec.decoder, settings, self.context, self.text_table, provenance
                    )
                else:
                    runner = OrtDecoder(
                        path, spec.decoder, settings, self.context, self.text_table, provenance, spec.prefill
                    )
            else:
                runner = OrtStage(name, path, settings, spec, MAX_BATCH.get(name), provenance)
            attrs["provider"] = runner.provider
        return runner
