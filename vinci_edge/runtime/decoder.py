"""The decoder stage with its KV cache: one preallocated buffer per layer, written in place.

Each layer's key and value buffers (1, kv_heads, context, head_dim) are bound as BOTH the past input
and the present output of the graph's GroupQueryAttention, so ONNX Runtime writes the new positions
into them and nothing is copied per token. `append` adds positions to the cache (a prompt, a decode
step, or - for live streams - a new question after earlier ones) and returns the last position's
logits; `rewind` drops positions (reuse a cached prefix), `reset` empties it. `prefill` and `step`
are what the shared decode loop (`vinci_edge.generation.generate`) calls.

An engine may hold a prefill graph beside the decoder's (manifest `PrefillGraph`; `int8-compute`):
the same inputs, outputs and weights file, other kernels. It gets a session of its own bound to the
same KV buffers, and runs every append of at least `min_positions` positions; shorter ones (decode
steps) run the decoder's graph. Its integer GEMMs are exact by definition; on a CPU where ONNX
Runtime's kernel is not (runtime/integer_gemm.py checks, once per process), the prefill graph is not
loaded and every append runs the decoder's graph; `prefill_note` says why.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vinci_edge import stages as st
from vinci_edge.errors import EngineError, PromptError
from vinci_edge.manifest import DecoderSpec, PrefillGraph
from vinci_edge.runtime.backend import (
    SessionSettings,
    check_provenance,
    graph_props,
    import_onnxruntime,
    make_session,
)
from vinci_edge.runtime.integer_gemm import FULL_LEVELS, INTEGER, check_integer_gemm


def _integer_gemm_note(prefill: PrefillGraph) -> str | None:
    """None where the CPU's integer GEMM is exact at the prefill graph's activation range; else
    why the prefill graph is not used (runtime/integer_gemm.py)."""
    kernel = prefill.integer_kernel or INTEGER
    try:
        check = check_integer_gemm(prefill.activation_levels or FULL_LEVELS, kernel)
    except Exception as exc:  # an ONNX Runtime without the operator: no prefill graph, no traceback
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        return (
            f"the integer GEMM check ({kernel}) could not run ({type(exc).__name__}: {first}); "
            "the prefill runs on the decode graph"
        )
    return None if check.exact else check.note()


class OrtDecoder:
    name = st.DECODER

    def __init__(
        self,
        path: Path,
        spec: DecoderSpec,
        settings: SessionSettings,
        context: int | None = None,
        embed_table: np.ndarray | None = None,
        provenance: Mapping[str, str] | None = None,
        prefill: PrefillGraph | None = None,
    ):
        """`embed_table`: the LLM's input embeddings (vocab, D), which `step` reads a token's row from.
        `provenance`: the props the graph must carry (`Manifest.stage_props`); None: not checked.
        `prefill`: the engine's prefill graph (its file beside `path`), or None."""
        self.spec = spec
        self.embed_table = embed_table
        self.session = make_session(path, settings)
        if provenance is not None:
            check_provenance(self.name, path, graph_props(self.session), provenance)
        self.prefill_session, self.prefill_min = None, None
        self.prefill_note: str | None = None  # why an engine's prefill graph is not used here
        if prefill is not None and settings.provider == "CPUExecutionProvider":
            self.prefill_note = _integer_gemm_note(prefill)
        if prefill is not None and self.prefill_note is None:
            prefill_path = Path(path).with_name(prefill.file)
            self.prefill_session = make_session(
                prefill_path, dataclasses.replace(settings, optimization=prefill.ort_optimization)
            )
            if provenance is not None:
                check_provenance(self.name, prefill_path, graph_props(self.prefill_session), provenance)
            self.prefill_min = prefill.min_positions
        self.provider = self.session.get_providers()[0]
        self.dtype = np.float16 if spec.dtype == "float16" else np.float32
        self.context = spec.max_context if context is None else min(context, spec.max_context)
        if self.context < 2:
            raise EngineError(f"a decoder context of {self.context} positions is too small")
        self.length = 0
        self._bind_cache()

    def _bind_cache(self) -> None:
        """A KV cache of this decoder's own, bound as the graph's past inputs and present outputs."""
        ort = import_onnxruntime()
        spec = self.spec
        device = "cuda" if self.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"
        shape = (1, spec.kv_heads, self.context, spec.head_dim)
        self.io = self.session.io_binding()
        # The prefill graph's binding: the same buffers, so either graph continues the other's cache.
        self.prefill_io = self.prefill_session.io_binding() if self.prefill_session is not None else None
        bindings = [b for b in (self.io, self.prefill_io) if b is not None]
        self.kv = []
        for i in range(spec.num_layers):
            for kind in ("key", "value"):
                buf = ort.OrtValue.ortvalue_from_shape_and_type(shape, self.dtype, device, 0)
                for io in bindings:
                    io.bind_ortvalue_input(f"past_{kind}_{i}", buf)
                    io.bind_ortvalue_output(f"present_{kind}_{i}", buf)
                self.kv.append(buf)
        # Logits live in host memory whatever the provider: ORT copies the one row out for us.
        self.logits = ort.OrtValue.ortvalue_from_shape_and_type((1, 1, spec.vocab_size), self.dtype, "cpu", 0)
        for io in bindings:
            io.bind_ortvalue_output("logits", self.logits)

    def sibling(self) -> OrtDecoder:
        """An empty decoder of its own cache on this decoder's ONNX Runtime session: many live
        streams share one loaded graph (its weights in memory once), each with its own KV cache and
        IO binding. Siblings may run at the same time from different threads."""
        twin = copy.copy(self)
        twin.length = 0
        twin._bind_cache()
        return twin

    @property
    def free(self) -> int:
        return self.context - self.length

    def append(self, embeds: np.ndarray) -> np.ndarray:
        """Add (S, D) positions after the cached ones; returns the last position's logits (vocab,)."""
        n = int(embeds.shape[0])
        if n == 0:
            raise ValueError("append needs at least one position")
        total = self.length + n
        if total > self.context:
            raise PromptError(
                f"{total} positions do not fit the decoder context of {self.context}",
                hint="use fewer frames (--num-frames), a shorter clip or question, or export with a larger "
                "--max-context",
            )
        x = np.ascontiguousarray(embeds[None], dtype=self.dtype)
        session, io = self.session, self.io
        if self.prefill_session is not None and n >= self.prefill_min:
            session, io = self.prefill_session, self.prefill_io
        io.bind_cpu_input("inputs_embeds", x)
        io.bind_cpu_input("seqlens_k", np.array([total - 1], np.int32))
        io.bind_cpu_input("total_sequence_length", np.array(total, np.int32))
        session.run_with_iobinding(io)
        self.length = total
        return self.logits.numpy().reshape(-1).astype(np.float32, copy=False)

    def prefill(self, embeds: np.ndarray) -> np.ndarray:
        """A new cache holding `embeds` (S, D); the last position's logits."""
        self.reset()
        return self.append(embeds)

    def step(self, token: int) -> np.ndarray:
        """Append a generated token (its embedding row); its logits."""
        if self.embed_table is None:
            raise ValueError("this decoder was made without the embedding table `step` needs")
        return self.append(self.embed_table[token][None])

    def rewind(self, length: int) -> None:
        """Forget positions after `length` (their buffer rows are simply overwritten later)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot rewind to {length} from {self.length}")
        self.length = length

    def reset(self) -> None:
        self.length = 0
