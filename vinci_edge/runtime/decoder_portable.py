"""The portable decoder graph on ONNX Runtime: TensorRT's graph, its maths checked on the CPU.

The portable graph (docs/portable-decoder.md) takes the KV cache as explicit inputs
`past_key_i` / `past_value_i` (1, kv_heads, P, head_dim) and returns it grown by the new positions
as `present_key_i` / `present_value_i` (1, kv_heads, P + S, head_dim); positions and the causal mask
come from P and S inside the graph. `PortableDecoder` keeps each call's present tensors as the next
call's past, and has `OrtDecoder`'s interface (`append`, `prefill`, `step`, `rewind`, `reset`,
`sibling`), so the shared decode loop and `vinci-edge run --decoder portable` drive it unchanged.

It is a check of the graph, not a fast path: every call copies the whole cache into the graph's
Concat (the fused graph writes new positions in place), so a decode step costs O(context) more.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vinci_edge import stages as st
from vinci_edge.errors import EngineError, PromptError
from vinci_edge.manifest import DecoderSpec
from vinci_edge.runtime.backend import SessionSettings, check_provenance, graph_props, make_session


class PortableDecoder:
    name = st.DECODER

    def __init__(
        self,
        path: Path,
        spec: DecoderSpec,
        settings: SessionSettings,
        context: int | None = None,
        embed_table: np.ndarray | None = None,
        provenance: Mapping[str, str] | None = None,
    ):
        """As `OrtDecoder`: `embed_table` for `step`, `provenance` the props the graph must carry."""
        if spec.attention != "portable":
            raise EngineError(f"{path.name} is a {spec.attention!r} decoder graph, not the portable one")
        self.spec = spec
        self.embed_table = embed_table
        self.session = make_session(path, settings)
        if provenance is not None:
            check_provenance(self.name, path, graph_props(self.session), provenance)
        self.provider = self.session.get_providers()[0]
        self.dtype = np.float16 if spec.dtype == "float16" else np.float32
        self.context = spec.max_context if context is None else min(context, spec.max_context)
        if self.context < 2:
            raise EngineError(f"a decoder context of {self.context} positions is too small")
        self.past_names = [f"past_{kind}_{i}" for i in range(spec.num_layers) for kind in ("key", "value")]
        self.output_names = ["logits"] + [n.replace("past_", "present_") for n in self.past_names]
        self.reset()

    def sibling(self) -> PortableDecoder:
        """An empty decoder of its own cache on this decoder's session (see OrtDecoder.sibling)."""
        twin = copy.copy(self)
        twin.reset()
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
        feeds = {"inputs_embeds": np.ascontiguousarray(embeds[None], dtype=self.dtype)}
        for name, kv in zip(self.past_names, self.kv):
            feeds[name] = np.ascontiguousarray(kv[:, :, : self.length])  # a copy only after a rewind
        logits, *present = self.session.run(self.output_names, feeds)
        self.kv = present
        self.length = total
        return logits.reshape(-1).astype(np.float32, copy=False)

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
        """Forget positions after `length` (the next call feeds only the first `length`)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot rewind to {length} from {self.length}")
        self.length = length

    def reset(self) -> None:
        shape = (1, self.spec.kv_heads, 0, self.spec.head_dim)
        self.kv = [np.zeros(shape, self.dtype) for _ in self.past_names]
        self.length = 0
