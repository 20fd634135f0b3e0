"""ONNX Runtime's CUDA provider with I/O binding on the device: the second GPU path, no TensorRT needed.

The media stages bind their inputs and outputs on the GPU (`io_binding`): a numpy input is copied to
the device once (`OrtValue.ortvalue_from_numpy(x, "cuda", 0)`), a device array (DLPack or the CUDA
array interface) is bound at its own address (`bind_input(name, "cuda", 0, dtype, shape, ptr)`), and
outputs are allocated on the device by ONNX Runtime and copied back once. The decoder is
`OrtDecoder` on the CUDA provider, which already keeps its KV cache on the device (`OrtValue`s bound
as past and present, written in place by GroupQueryAttention) and copies back only the logits.

Selected by `vinci-edge run --backend ort-cuda`; `runtime/backends.py` says first whether this
machine has the provider and a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vinci_edge import metrics as m
from vinci_edge import stages as st
from vinci_edge.runtime.backend import OrtStage, SessionSettings, import_onnxruntime
from vinci_edge.runtime.decoder import OrtDecoder
from vinci_edge.runtime.dlpack import device_view, exports_device_memory
from vinci_edge.runtime.stages import MAX_BATCH, EngineStages

CUDA = "CUDAExecutionProvider"


class OrtCudaStage(OrtStage):
    """An `OrtStage` whose run binds inputs and outputs on the GPU (see the module docstring)."""

    device_id = 0

    def run(self, inputs: Mapping[str, Any], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        ort = import_onnxruntime()
        io = self.session.io_binding()
        keep = []
        for name, value in inputs.items():
            dtype = self.input_dtypes[name]
            if exports_device_memory(value) and not isinstance(value, np.ndarray):
                view = device_view(value)
                io.bind_input(name, "cuda", self.device_id, view.dtype, list(view.shape), view.ptr)
                keep.append(view)
            else:
                host = np.ascontiguousarray(value, dtype=dtype)
                dev = ort.OrtValue.ortvalue_from_numpy(host, "cuda", self.device_id)
                io.bind_ortvalue_input(name, dev)
                keep.append(dev)
        names = outputs or self.output_names
        for name in names:
            io.bind_output(name, "cuda", self.device_id)
        self.session.run_with_iobinding(io)
        result = dict(zip(names, io.copy_outputs_to_cpu()))
        for view in keep:
            if hasattr(view, "release"):
                view.release()
        return result


class OrtCudaStages(EngineStages):
    """`EngineStages` on the CUDA provider for every stage, media stages bound on the device."""

    def __init__(self, engine, text_table, threads: int = 0, context: int | None = None, load_metrics=None):
        super().__init__(engine, text_table, "cuda", None, threads, context, load_metrics)

    def _create(self, name: str) -> OrtStage | OrtDecoder:
        if name == st.DECODER:
            return super()._create(name)
        spec = self.engine.stages[name]
        settings = SessionSettings(provider=CUDA, threads=self.threads, optimization=spec.ort_optimization)
        provenance = self.engine.manifest.stage_props(name)
        with self._load_metrics().stage(m.LOAD, stage=name) as attrs:
            runner = OrtCudaStage(
                name, self.engine.stage_path(name), settings, spec, MAX_BATCH.get(name), provenance
            )
            attrs["provider"] = runner.provider
        return runner
