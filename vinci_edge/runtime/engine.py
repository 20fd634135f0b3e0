"""An engine folder as the runtime sees it: the manifest, checked, and the paths it names.

Everything wrong with a folder is found here, before a session is created, and reported as one
`EngineError` that says what to do: a missing file, a stage the request needs but the engine lacks,
another schema version, stages from different models.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vinci_edge.config import OmniVinciConfig
from vinci_edge.errors import EngineError
from vinci_edge.manifest import MANIFEST, REEXPORT, Manifest, StageEntry
from vinci_edge.stages import DECODER, MEDIA_STAGES


@dataclass
class Engine:
    folder: Path
    manifest: Manifest

    @classmethod
    def load(cls, folder: str | Path) -> Engine:
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise EngineError(
                f"{folder} is a file, not an engine folder", hint="name the folder export wrote"
            )
        if not folder.is_dir():
            raise EngineError(f"engine folder {folder} does not exist", hint=REEXPORT)
        if not (folder / MANIFEST).is_file():
            partial = folder.with_name(f".{folder.name}.partial")
            hint = "an export into it was interrupted; " + REEXPORT if partial.exists() else REEXPORT
            raise EngineError(f"{folder} has no {MANIFEST}: it is not a vinci-edge engine", hint=hint)
        engine = cls(folder, Manifest.read(folder))
        engine._check_files()
        engine._check_cross_stage()
        return engine

    # ---- checks ---------------------------------------------------------------------------------------
    def _check_files(self) -> None:
        graphs = {f"the {name} decoder graph": e for name, e in self.manifest.decoder_graphs.items()}
        stages = {f"stage '{name}'": e for name, e in self.stages.items()}
        for what, stage in {**stages, **graphs}.items():
            f = self.folder / stage.file
            if not f.is_file():
                raise EngineError(f"{what} file {f.name} is missing from {self.folder}", hint=REEXPORT)
            if stage.external_data and not (self.folder / stage.external_data).is_file():
                raise EngineError(f"{stage.external_data} (weights of {what}) is missing", hint=REEXPORT)
            if stage.prefill is not None and not (self.folder / stage.prefill.file).is_file():
                raise EngineError(
                    f"{stage.prefill.file} (the prefill graph of {what}) is missing", hint=REEXPORT
                )
        if not self.embed_path.is_file():
            raise EngineError(f"{self.embed_path.name} is missing from {self.folder}", hint=REEXPORT)
        if (
            not (self.tokenizer_dir / "tokenizer.json").is_file()
            and not (self.tokenizer_dir / "vocab.json").is_file()
        ):
            raise EngineError(f"the tokenizer is missing from {self.tokenizer_dir}", hint=REEXPORT)

    def _check_cross_stage(self) -> None:
        """Every stage must produce or take the LLM width; a folder mixing stages of different
        models would only fail later with a shape error deep inside a session."""
        d = self.config.hidden_size
        widths = {"embed_tokens": self.manifest.text.embed_shape[1]}
        if DECODER in self.stages:
            widths[DECODER] = self.manifest.decoder.hidden_size
        for name in MEDIA_STAGES:
            out = self.stages[name].output("tokens") if name in self.stages else None
            if out and out.shape and isinstance(out.shape[-1], int):
                widths[name] = out.shape[-1]
        wrong = {k: v for k, v in widths.items() if v != d}
        if wrong:
            raise EngineError(
                f"stage widths {wrong} differ from the model's hidden size {d}: this folder mixes stages "
                "exported from different models",
                hint=REEXPORT,
            )

    # ---- access -----------------------------------------------------------------------------------------
    @property
    def config(self) -> OmniVinciConfig:
        return self.manifest.config

    @property
    def stages(self) -> dict[str, StageEntry]:
        return self.manifest.stages

    def stage_path(self, name: str) -> Path:
        if name not in self.stages:
            raise EngineError(
                f"this engine has no '{name}' stage (it has {', '.join(self.stages) or 'none'})",
                hint=f"export it: `vinci-edge export ... --stages {name}` (or all stages)",
            )
        return self.folder / self.stages[name].file

    def require(self, name: str, why: str) -> None:
        if name not in self.stages:
            raise EngineError(
                f"{why}, but this engine has no '{name}' stage",
                hint=f"export the engine with the {name} stage (the default exports all of them)",
            )

    @property
    def encoders_fingerprint(self) -> str:
        """What the media chunks' content ids say about the encoders: the source checkpoint and how
        each media stage was exported and quantized."""
        media = {k: self.stages[k] for k in MEDIA_STAGES if k in self.stages}
        record = {
            "source": [self.manifest.source.get(k) for k in ("fingerprint", "export_id")],
            "stages": {k: [e.file, e.dtype, self.manifest.precision_of(k)] for k, e in media.items()},
            "precision": {k: v for k, v in self.manifest.precision.items() if k in media},
        }
        return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def embed_path(self) -> Path:
        return self.folder / self.manifest.text.embed_file

    @property
    def tokenizer_dir(self) -> Path:
        return self.folder / self.manifest.text.tokenizer

    def embed_table(self) -> np.ndarray:
        """The text embedding table, memory-mapped: only rows that are used are read."""
        table = np.load(self.embed_path, mmap_mode="r")
        if table.shape[1] != self.config.hidden_size:
            raise EngineError(f"{self.embed_path.name} has width {table.shape[1]}", hint=REEXPORT)
        return table
