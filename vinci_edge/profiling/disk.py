"""Engine sizes on disk: each stage's graph and weight files, the text table, the tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vinci_edge.manifest import Manifest


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.is_file() else 0


def engine_sizes(folder: str | Path, manifest: Manifest) -> dict[str, Any]:
    """Bytes per stage (its .onnx plus its .onnx.data), per text asset, and the folder's total."""
    folder = Path(folder)
    stages = {}
    for name, stage in manifest.stages.items():
        graph = folder / stage.file
        files = {graph.name: _size(graph)}
        data = graph.with_name(graph.name + ".data")
        if data.is_file():
            files[data.name] = _size(data)
        stages[name] = {"files": files, "bytes": sum(files.values())}
    text = manifest.text
    other = {
        text.embed_file: _size(folder / text.embed_file),
        text.tokenizer + "/": _size(folder / text.tokenizer),
    }
    return {"stages": stages, "other": other, "total_bytes": _size(folder)}
