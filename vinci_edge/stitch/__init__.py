"""The stitch: a plan + the text table + the media banks -> the LLM's `inputs_embeds` (S x D).

Position p takes row src[p] of its kind's source (`vinci_edge.kinds.Kind`: TEXT = the embedding table,
VIDEO / AUDIO / IMAGE = the encoders' banks); VIDEO and AUDIO rows are turned by CRTE
(`vinci_edge.crte`). Torch-free; cuda-python is imported only by the CUDA path, when it runs.

    inputs.py        StitchInputs, the PlanColumns it reads, the Stitch signature
    numpy_stitch.py  stitch_numpy: the reference
    library.py       libvinci_crte.so: loading, ABI check, the C structs (Source, PlanArrays)
    cpu.py           NativeStitch: the C++ kernel on numpy arrays
    cuda.py          stitch_cuda: the CUDA kernel on device buffers (DeviceSource, DevicePlan)
    cuda_host.py     CudaStitch: numpy in, CUDA kernel, numpy out (through cuda-python)
    select.py        select_stitch: the one place that picks among them
"""

from vinci_edge.stitch.cpu import NativeStitch
from vinci_edge.stitch.cuda import DevicePlan, DeviceSource, stitch_cuda
from vinci_edge.stitch.cuda_host import CudaStitch, compact_inputs, cuda_unavailable_reason
from vinci_edge.stitch.inputs import PlanColumns, Stitch, StitchInputs, StitchPlan
from vinci_edge.stitch.library import (
    NativeLibrary,
    NativeLibraryError,
    PlanArrays,
    Source,
    load_library,
    sources_array,
    unavailable_reason,
)
from vinci_edge.stitch.numpy_stitch import stitch_numpy
from vinci_edge.stitch.select import CHOICES, StitchChoice, select_stitch

__all__ = [
    "CHOICES",
    "CudaStitch",
    "DevicePlan",
    "DeviceSource",
    "NativeLibrary",
    "NativeLibraryError",
    "NativeStitch",
    "PlanArrays",
    "PlanColumns",
    "Source",
    "Stitch",
    "StitchChoice",
    "StitchInputs",
    "StitchPlan",
    "compact_inputs",
    "cuda_unavailable_reason",
    "load_library",
    "select_stitch",
    "sources_array",
    "stitch_cuda",
    "stitch_numpy",
    "unavailable_reason",
]
