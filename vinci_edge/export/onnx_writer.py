"""Writing ONNX graphs whose weights stream to an external-data file as they are added.

Large graphs (the 9B decoder is ~30 GB in fp32) cannot be held twice in memory; `WeightFile`
appends each initializer to `<graph>.onnx.data` the moment it is created, so building a graph
needs about one tensor of extra memory, not one model. `add_props` stamps a saved graph's
metadata_props (the stage's provenance) without loading its external weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.int8): TensorProto.INT8,
}

# Small tensors stay inside the .onnx file; bigger ones go to the data file, page-aligned so ONNX
# Runtime can memory-map them.
INLINE_LIMIT = 1024
ALIGN = 4096


class WeightFile:
    def __init__(self, graph_path: Path, external: bool = True) -> None:
        self.graph_path = Path(graph_path)
        self.external = external
        self.location = self.graph_path.name + ".data"
        self.data_path = self.graph_path.with_name(self.location)
        self.initializers: list[TensorProto] = []
        self.bytes_written = 0
        self._f = open(self.data_path, "wb") if external else None  # noqa: SIM115 - closed in close()

    def add(self, name: str, array: np.ndarray) -> str:
        array = np.ascontiguousarray(array)
        if not self.external or array.nbytes <= INLINE_LIMIT:
            self.initializers.append(numpy_helper.from_array(array, name))
            return name
        pad = (-self._f.tell()) % ALIGN
        if pad:
            self._f.write(b"\0" * pad)
        offset = self._f.tell()
        self._f.write(array.tobytes())
        self.bytes_written += array.nbytes
        t = TensorProto()
        t.name = name
        t.data_type = NP_TO_ONNX[array.dtype]
        t.dims.extend(array.shape)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.location), ("offset", str(offset)), ("length", str(array.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = k, v
        self.initializers.append(t)
        return name

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            if self.bytes_written == 0:
                os.remove(self.data_path)


def save_graph(
    graph: onnx.GraphProto,
    path: Path,
    opsets: dict[str, int],
    producer: str = "vinci-edge",
    props: Mapping[str, str] | None = None,
) -> onnx.ModelProto:
    """Write `graph` as a model at `path`; `props` go to its metadata_props (the stage's provenance,
    vinci_edge.manifest.STAGE_PROPS, which the runtime checks against the manifest)."""
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()], producer_name=producer
    )
    model.ir_version = 9
    if props:
        helper.set_model_props(model, dict(props))
    onnx.save_model(model, str(path))
    return model


def add_props(path: Path, props: Mapping[str, str]) -> None:
    """Add `props` to the metadata_props of the saved graph at `path` (keys it has are replaced).

    How quantize carries a stage's provenance (vinci_edge.manifest.stage_props) over to the graph a
    handler wrote (export sets the props as it saves each graph). Only the graph
    file is rewritten: it is read without its external data, and onnx writes out no tensor whose
    bytes it did not load, so `<file>.data` stays as it was; weights kept inline (graphs under 100 MB
    of weights) are read and written once more.
    """
    model = onnx.load(str(path), load_external_data=False)
    merged = {p.key: p.value for p in model.metadata_props} | dict(props)
    helper.set_model_props(model, merged)
    onnx.save_model(model, str(path))
