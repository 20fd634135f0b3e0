"""The reference pipeline: a checkpoint answering a question about media, end to end, in PyTorch.

The same request path as the runtime, with the PyTorch model behind each stage:

    prompt  = the prompt builder (vinci_edge.request): media chunks, token ids, the plan
    banks   = each media chunk encoded by its modality through `TorchStages` (the model's modules,
              exactly what each exported stage computes)
    embeds  = the model's own stitch: TEG gather + CRTE in torch float64 (or the native kernel)
    text    = the shared decode loop (vinci_edge.generation) over `TorchDecoder`

timed stage by stage with the same metrics object as the runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from vinci_edge import metrics as m
from vinci_edge import stages as st
from vinci_edge.generation import Answer, GenerationConfig, consume, fit_context, generate
from vinci_edge.kinds import Kind
from vinci_edge.model.checkpoint import fingerprint, load_model
from vinci_edge.model.omnivinci import OmniVinciModel
from vinci_edge.request.encode import EncodedCache, encode_banks
from vinci_edge.request.prompt import Prompt, PromptBuilder
from vinci_edge.text.tokenizer import TextTokenizer


class TorchStage:
    """One stage as the model's modules compute it, behind the runtime's stage interface."""

    provider = "pytorch"
    max_batch = None  # the whole input in one call, as the reference always did

    def __init__(
        self, name: str, outputs: dict[str, Callable[[torch.Tensor], torch.Tensor]], dtype: torch.dtype
    ):
        self.name = name
        self.outputs = outputs
        self.dtype = dtype

    @torch.inference_mode()
    def run(
        self, inputs: Mapping[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        (x,) = inputs.values()
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.dtype)
        return {k: self.outputs[k](t).float().numpy() for k in outputs or self.outputs}


class TorchStages:
    """The model's stages by name: vision (tokens and the tower's features), image_projector, audio."""

    def __init__(self, model: OmniVinciModel) -> None:
        dtype = model.dtype
        self.stages = {
            st.VISION: TorchStage(
                st.VISION, {"tokens": model.encode_frames, "features": model.vision_tower}, dtype
            ),
            st.IMAGE_PROJECTOR: TorchStage(st.IMAGE_PROJECTOR, {"tokens": model.mm_projector}, dtype),
        }
        if model.cfg.has_sound:
            self.stages[st.AUDIO] = TorchStage(st.AUDIO, {"tokens": model.encode_audio}, dtype)

    def __getitem__(self, name: str) -> TorchStage:
        return self.stages[name]


class TorchDecoder:
    """The model's LLM with a transformers DynamicCache, behind the shared decode loop."""

    provider = "pytorch"

    def __init__(self, model: OmniVinciModel) -> None:
        self.model = model
        self.context = int(model.cfg.llm.get("max_position_embeddings") or 32768)
        self.cache: DynamicCache | None = None

    @torch.inference_mode()
    def prefill(self, embeds: torch.Tensor) -> np.ndarray:
        logits, self.cache = self.model.prefill(embeds)
        return logits.numpy().astype(np.float32)

    @torch.inference_mode()
    def step(self, token: int) -> np.ndarray:
        return self.model.step(token, self.cache).numpy().astype(np.float32)


class Reference:
    def __init__(
        self, model: OmniVinciModel, tokenizer: TextTokenizer, encoders: str = "", cache_chunks: int = 4
    ) -> None:
        """`cache_chunks`: media chunks whose encoder rows are kept for the next question, as the
        runtime's `Pipeline(cache_chunks=)` (0: every request encodes its media again)."""
        self.model = model
        self.cfg = model.cfg
        self.tokenizer = tokenizer
        self.prompts = PromptBuilder(self.cfg, tokenizer, encoders=encoders)
        self.stages = TorchStages(model)
        self.decoder = TorchDecoder(model)
        self.cache = EncodedCache(cache_chunks)
        # Makes each request's Metrics, as `Pipeline.metrics_factory` does (the command line sets one
        # that says each stage as it starts).
        self.metrics_factory: Callable[[], m.Metrics] = m.Metrics

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        dtype: str = "float32",
        native_stitch: bool = False,
        cache_chunks: int = 4,
    ) -> Reference:
        model = load_model(checkpoint, dtype)
        model.use_native_stitch = native_stitch
        tokenizer = TextTokenizer.from_folder(Path(checkpoint) / "llm")
        return cls(model, tokenizer, encoders=f"{fingerprint(checkpoint)}:{dtype}", cache_chunks=cache_chunks)

    def prepare(self, question: str, metrics: m.Metrics | None = None, **options: Any) -> Prompt:
        """The prompt for a question and its media (`PromptBuilder.build`'s options: video, audio,
        image, num_frames, system_prompt)."""
        return self.prompts.build(question, metrics or m.Metrics(), **options)

    @torch.inference_mode()
    def banks(self, prompt: Prompt, metrics: m.Metrics) -> dict[Kind, torch.Tensor]:
        """Every media chunk's rows, by kind, as the model's tensors."""
        banks = encode_banks(
            prompt, self.prompts.modalities, self.stages, self.cfg.hidden_size, metrics, self.cache
        )
        return {k: torch.from_numpy(v).to(self.model.dtype) for k, v in banks.items()}

    @torch.inference_mode()
    def inputs_embeds(self, prompt: Prompt, metrics: m.Metrics | None = None) -> torch.Tensor:
        metrics = metrics or m.Metrics()
        banks = self.banks(prompt, metrics)
        with metrics.stage(m.STITCH, positions=len(prompt.plan)):
            return self.model.stitch(prompt.plan, banks)

    def answer(
        self,
        question: str,
        gen: GenerationConfig | None = None,
        on_text: Callable[[str], None] | None = None,
        **media: Any,
    ) -> Answer:
        """Answer a question; `on_text` receives the answer as it is generated."""
        return consume(self._run(question, gen or GenerationConfig(), **media), on_text)

    def stream(self, question: str, gen: GenerationConfig | None = None, **media: Any) -> Iterator[str]:
        """Yield the answer text piece by piece."""
        return (yield from self._run(question, gen or GenerationConfig(), **media))

    def answer_prompt(self, prompt: Prompt, gen: GenerationConfig | None = None) -> Answer:
        """Answer a prompt built elsewhere (`PromptBuilder.from_media`), as `Pipeline.answer` does."""
        return consume(self._answer(prompt, gen or GenerationConfig(), self.metrics_factory()), None)

    def _run(self, question: str, gen: GenerationConfig, **media: Any) -> Generator[str, None, Answer]:
        metrics = self.metrics_factory()
        prompt = self.prepare(question, metrics=metrics, **media)
        return (yield from self._answer(prompt, gen, metrics))

    def _answer(
        self, prompt: Prompt, gen: GenerationConfig, metrics: m.Metrics
    ) -> Generator[str, None, Answer]:
        max_new, warnings = fit_context(len(prompt.plan), gen.max_new_tokens, self.decoder.context)
        embeds = self.inputs_embeds(prompt, metrics)
        out = yield from generate(
            self.decoder, embeds, replace(gen, max_new_tokens=max_new), self.tokenizer, metrics
        )
        metrics.finish()
        return Answer(
            token_ids=out.token_ids,
            text=out.text,
            stop_reason=out.stop_reason,
            prompt_tokens=len(prompt.plan),
            metrics=metrics,
            backend="pytorch-reference",
            warnings=prompt.warnings + warnings,
            plan=prompt.plan.counts(),
            extra={"media": prompt.media_info},
        )
