"""The exported stages: their names, and the one interface every backend runs them behind.

An engine holds up to four stage graphs. The media stages (vision, image_projector, audio) turn
preprocessed media into LLM-width rows; the decoder is the LLM. The names are the manifest's keys,
the engine's file names and the `--stage-provider` names, written once here.

A `StageRunner` runs one stage graph on numpy arrays: ONNX Runtime today (`runtime/backend.py`), the
PyTorch modules for the reference (`model/reference.py`), TensorRT later. The modalities
(`vinci_edge.request`) encode through it without knowing which backend is behind it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

VISION = "vision"  # frames / image tiles -> projected tokens (and the tower's features)
IMAGE_PROJECTOR = "image_projector"  # S2-merged image features -> tokens
AUDIO = "audio"  # log-mel windows -> projected tokens
DECODER = "decoder"  # inputs_embeds + KV cache -> logits

MEDIA_STAGES: tuple[str, ...] = (VISION, IMAGE_PROJECTOR, AUDIO)
STAGE_NAMES: tuple[str, ...] = (*MEDIA_STAGES, DECODER)


class StageRunner(Protocol):
    """One stage graph: named numpy inputs in, the requested named outputs back."""

    name: str
    provider: str
    # Inputs go through in batches of at most this many along axis 0 (None: all at once), so memory
    # stays flat for long clips.
    max_batch: int | None

    def run(
        self, inputs: Mapping[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]: ...


class Stages(Protocol):
    """The stage runners of one model, created on first use (a text-only question never loads the
    towers): `stages[VISION]`."""

    def __getitem__(self, name: str) -> StageRunner: ...


def run_batched(runner: StageRunner, name: str, x: np.ndarray, output: str) -> np.ndarray:
    """`runner` on `x` in batches of `runner.max_batch` along axis 0, outputs concatenated."""
    step = runner.max_batch or max(1, x.shape[0])
    parts = [runner.run({name: x[i : i + step]}, [output])[output] for i in range(0, x.shape[0], step)]
    return np.concatenate(parts)
