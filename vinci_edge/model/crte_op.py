"""`torch.ops.vinci_edge.crte_stitch`: the fused TEG gather + CRTE stitch as a torch custom op.

    crte_stitch(text_table, banks=[video, audio, image], kind, src, scale, a, b,
                freqs_a=[video, audio, image], freqs_b=[...], out_dtype, num_threads=0) -> (n, D)

The same operation as `vinci_edge.stitch.stitch_numpy` (see cpp_ext/crte_capi.h): position p
takes row src[p] of its kind's source (kind 0 = the text embedding table) and, when that kind's
frequency tables are non-empty, rotates its first len(freqs_a) + len(freqs_b) channels by CRTE.

Where it runs:
- CPU tensors in float32 / float16 -> the native C++ kernel (libvinci_crte.so through
  `vinci_edge.stitch.library` on the tensors' data pointers: no copy, no Python headers, works with
  any torch build);
- CUDA tensors, when the library has its CUDA part -> the CUDA kernel on torch's current stream;
- anything else (bfloat16 models, no native library) -> torch in float64, the reference's own
  arithmetic (`vinci_edge.model.crte_torch`). So the op always works; `native_available()` says
  whether it is the fast path.

A fake (meta) implementation is registered, so the op traces under torch.compile / torch.export.
"""

from __future__ import annotations

import numpy as np
import torch

from vinci_edge import crte
from vinci_edge.kinds import MEDIA_KINDS, Kind
from vinci_edge.model.crte_torch import rotate_by_angles
from vinci_edge.stitch import library as native
from vinci_edge.stitch.inputs import PlanColumns, StitchPlan

OP_NAME = "vinci_edge::crte_stitch"
_DTYPES = {torch.float32: native.F32, torch.float16: native.F16}


def native_available(device: str = "cpu") -> bool:
    """Whether the op runs the native kernel for float32/float16 tensors on `device` ("cpu"/"cuda")."""
    lib = native.load_library()
    if lib is None:
        return False
    return device == "cpu" or (lib.has_cuda and lib.cuda_device_count() > 0)


def _address(t: torch.Tensor | None) -> tuple[int, int]:
    """(data pointer, element count) of a tensor; (0, 0) for None or an empty one."""
    return (t.data_ptr(), t.numel()) if t is not None and t.numel() else (0, 0)


def _fill_source(s: native.Source, t: torch.Tensor, fa: torch.Tensor | None, fb: torch.Tensor | None) -> None:
    (fa_ptr, len_a), (fb_ptr, len_b) = _address(fa), _address(fb)
    s.assign(
        _address(t)[0],
        t.shape[0],
        t.shape[1],
        _DTYPES[t.dtype],
        freqs_a=fa_ptr,
        len_a=len_a,
        freqs_b=fb_ptr,
        len_b=len_b,
    )


def _stitch_native(
    lib: native.NativeLibrary,
    sources: list[torch.Tensor],
    cols: list[torch.Tensor],
    freqs_a: list[torch.Tensor],
    freqs_b: list[torch.Tensor],
    out: torch.Tensor,
    num_threads: int,
) -> None:
    arr = native.sources_array()
    for k, t in enumerate(sources):
        if t.shape[0]:
            fa = freqs_a[k - 1] if k else None
            fb = freqs_b[k - 1] if k else None
            _fill_source(arr[k], t, fa, fb)
    plan = native.PlanArrays(*(c.data_ptr() for c in cols), out.shape[0])
    dim, code = out.shape[1], _DTYPES[out.dtype]
    if out.device.type == "cuda":
        stream = torch.cuda.current_stream(out.device).cuda_stream
        lib.stitch_cuda(arr, plan, dim, out.data_ptr(), dim, code, 0, stream)
    else:
        lib.stitch_cpu(arr, plan, dim, out.data_ptr(), dim, code, num_threads or torch.get_num_threads())


def _stitch_reference(
    sources: list[torch.Tensor],
    kind: torch.Tensor,
    src: torch.Tensor,
    scale: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    freqs_a: list[torch.Tensor],
    freqs_b: list[torch.Tensor],
    out: torch.Tensor,
) -> None:
    """torch float64, as `OmniVinciModel.stitch` / `crte_torch.rotate` compute it."""
    for k, table in enumerate(sources):
        sel = kind == k
        if not bool(sel.any()):
            continue
        x = table[src[sel]].to(torch.float64)
        fa = freqs_a[k - 1] if k else table.new_zeros(0, dtype=torch.float64)
        fb = freqs_b[k - 1] if k else table.new_zeros(0, dtype=torch.float64)
        if fa.numel() + fb.numel():
            ang = torch.cat(
                [(scale[sel] * a[sel])[:, None] * fa[None], (scale[sel] * b[sel])[:, None] * fb[None]], 1
            )
            x = rotate_by_angles(x, ang)
        out[sel] = x.to(out.dtype)


@torch.library.custom_op(OP_NAME, mutates_args=())
def crte_stitch(
    text_table: torch.Tensor,
    banks: list[torch.Tensor],
    kind: torch.Tensor,
    src: torch.Tensor,
    scale: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    freqs_a: list[torch.Tensor],
    freqs_b: list[torch.Tensor],
    out_dtype: torch.dtype,
    num_threads: int = 0,
) -> torch.Tensor:
    if len(banks) != 3 or len(freqs_a) != 3 or len(freqs_b) != 3:
        raise ValueError("crte_stitch takes three banks and three frequency tables each: video, audio, image")
    dim = text_table.shape[1]
    for t in banks:
        if t.numel() and (t.dim() != 2 or t.shape[1] != dim):
            raise ValueError(f"every bank must be (rows, {dim}), got {tuple(t.shape)}")
    if bool(((kind < 0) | (kind >= native.NUM_KINDS)).any()):
        raise ValueError("a plan kind is outside 0..3")
    device = text_table.device
    sources = [text_table.contiguous(), *(t.to(device).contiguous() for t in banks)]
    cols = [
        kind.to(device=device, dtype=torch.int8).contiguous(),
        src.to(device=device, dtype=torch.int64).contiguous(),
        *(c.to(device=device, dtype=torch.float64).contiguous() for c in (scale, a, b)),
    ]
    fa = [f.to(device=device, dtype=torch.float64).contiguous() for f in freqs_a]
    fb = [f.to(device=device, dtype=torch.float64).contiguous() for f in freqs_b]
    out = torch.empty(kind.shape[0], dim, dtype=out_dtype, device=device)
    if out.shape[0] == 0:
        return out
    lib = native.load_library()
    fast = (
        lib is not None
        and out_dtype in _DTYPES
        and all(t.dtype in _DTYPES for t in sources if t.shape[0])
        and (device.type == "cpu" or (device.type == "cuda" and lib.has_cuda))
    )
    if fast:
        _stitch_native(lib, sources, cols, fa, fb, out, num_threads)
    else:
        _stitch_reference(sources, *cols, fa, fb, out)
    return out


@crte_stitch.register_fake
def _(text_table, banks, kind, src, scale, a, b, freqs_a, freqs_b, out_dtype, num_threads=0):
    return text_table.new_empty((kind.shape[0], text_table.shape[1]), dtype=out_dtype)


def _freqs(table: crte.RotationTable | None) -> tuple[torch.Tensor, torch.Tensor]:
    if table is None:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    return torch.from_numpy(np.asarray(table.freqs_a, np.float64)), torch.from_numpy(
        np.asarray(table.freqs_b, np.float64)
    )


def stitch(
    plan: PlanColumns,
    text_table: torch.Tensor,
    banks: dict[int, torch.Tensor],
    tables: dict[int, crte.RotationTable | None],
    out_dtype: torch.dtype,
    num_threads: int = 0,
) -> torch.Tensor:
    """`OmniVinciModel.stitch` through the op: inputs_embeds (S, D) from the plan, the embedding table
    (e.g. `model.llm.get_input_embeddings().weight`), the banks and the rotation tables."""
    empty = text_table.new_zeros((0, text_table.shape[1]))
    freqs = [_freqs(tables.get(k)) for k in MEDIA_KINDS]
    return torch.ops.vinci_edge.crte_stitch(
        text_table.detach(),
        [banks.get(k, empty).detach() for k in MEDIA_KINDS],
        torch.from_numpy(np.ascontiguousarray(plan.kind, np.int8)),
        torch.from_numpy(np.ascontiguousarray(plan.src, np.int64)),
        torch.from_numpy(np.ascontiguousarray(plan.scale, np.float64)),
        torch.from_numpy(np.ascontiguousarray(plan.a, np.float64)),
        torch.from_numpy(np.ascontiguousarray(plan.b, np.float64)),
        [f[0] for f in freqs],
        [f[1] for f in freqs],
        out_dtype,
        num_threads,
    )


def rotate(
    x: torch.Tensor, table: crte.RotationTable, scale: np.ndarray, a: np.ndarray, b: np.ndarray
) -> torch.Tensor:
    """`vinci_edge.model.crte_torch.rotate` through the op: rotate every row of x (n, D), returned in
    x's dtype (float32 / float16 on the native kernel; other dtypes in torch float64)."""
    n = x.shape[0]
    plan = StitchPlan(
        kind=np.full(n, Kind.VIDEO, np.int8),
        src=np.arange(n, dtype=np.int64),
        scale=np.asarray(scale, np.float64),
        a=np.asarray(a, np.float64),
        b=np.asarray(b, np.float64),
    )
    text = x.new_zeros((0, x.shape[1]))
    return stitch(plan, text, {Kind.VIDEO: x}, {Kind.VIDEO: table}, x.dtype)


__all__ = ["OP_NAME", "crte_stitch", "native_available", "rotate", "stitch"]
