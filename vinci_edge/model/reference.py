"""The reference pipeline: a checkpoint answering a question about media, end to end, in PyTorch.

prepare_request (shared, torch-free) -> vision / audio / image stages -> stitch (plan + CRTE) ->
prefill -> decode, timed stage by stage with the same metrics object as the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vinci_edge import metrics as m
from vinci_edge import timeline as tl
from vinci_edge.generation import Answer, GenerationConfig, TokenStream
from vinci_edge.model.checkpoint import load_model
from vinci_edge.model.omnivinci import OmniVinciModel
from vinci_edge.request import PreparedRequest, prepare_request
from vinci_edge.sampling import Sampler
from vinci_edge.text.tokenizer import TextTokenizer


class Reference:
    def __init__(self, model: OmniVinciModel, tokenizer: TextTokenizer) -> None:
        self.model = model
        self.cfg = model.cfg
        self.tokenizer = tokenizer

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path, dtype: str = "float32", native_stitch: bool = False
    ) -> Reference:
        model = load_model(checkpoint, dtype)
        model.use_native_stitch = native_stitch
        return cls(model, TextTokenizer.from_folder(Path(checkpoint) / "llm"))

    def prepare(self, question: str, metrics: m.Metrics | None = None, **media) -> PreparedRequest:
        return prepare_request(self.cfg, self.tokenizer, question, metrics=metrics, **media)

    @torch.inference_mode()
    def banks(self, req: PreparedRequest, metrics: m.Metrics) -> dict[int, torch.Tensor]:
        """Run the media stages and lay their outputs out as the plan's banks."""
        d = self.cfg.hidden_size
        empty = torch.zeros(0, d, dtype=self.model.dtype)
        banks = {tl.VIDEO: empty, tl.AUDIO: empty, tl.IMAGE: empty}
        if req.frames is not None:
            with metrics.stage(m.VISION, frames=int(req.frames.shape[0])):
                tokens = self.model.encode_frames(torch.from_numpy(req.frames))
                per_video = [n for _, n in _frames_per_video(req)]
                banks[tl.VIDEO] = self.model.video_bank(tokens, req.plan, per_video)
        if req.images:
            with metrics.stage(m.VISION, images=len(req.images)):
                banks[tl.IMAGE] = torch.cat(
                    [self.model.encode_image(torch.from_numpy(im.pixels), im.block_size) for im in req.images]
                )
        if req.mel_chunks is not None:
            with metrics.stage(m.AUDIO, chunks=int(req.mel_chunks.shape[0])):
                out = self.model.encode_audio(torch.from_numpy(req.mel_chunks))
                banks[tl.AUDIO] = out.reshape(-1, d)
        return banks

    @torch.inference_mode()
    def inputs_embeds(self, req: PreparedRequest, metrics: m.Metrics | None = None) -> torch.Tensor:
        metrics = metrics or m.Metrics()
        banks = self.banks(req, metrics)
        with metrics.stage(m.STITCH, positions=len(req.plan)):
            return self.model.stitch(req.plan, banks)

    @torch.inference_mode()
    def answer(
        self,
        question: str,
        gen: GenerationConfig | None = None,
        on_text: Callable[[str], None] | None = None,
        **media,
    ) -> Answer:
        gen = gen or GenerationConfig()
        metrics = m.Metrics()
        req = self.prepare(question, metrics=metrics, **media)
        embeds = self.inputs_embeds(req, metrics)
        stream = TokenStream(self.tokenizer, gen.stop_strings, on_text)
        tokens, reason = self.generate(embeds, gen, stream, metrics)
        text = stream.finish()
        metrics.finish()
        return Answer(
            token_ids=tokens,
            text=text,
            stop_reason=reason,
            prompt_tokens=len(req.plan),
            metrics=metrics,
            backend="pytorch-reference",
            warnings=req.warnings,
            plan=req.plan.counts(),
            extra={"media": req.media_info},
        )

    @torch.inference_mode()
    def generate(
        self, embeds: torch.Tensor, gen: GenerationConfig, stream: TokenStream, metrics: m.Metrics
    ) -> tuple[list[int], str]:
        """Prefill, then one step per token; the first token comes from the prefill logits."""
        sampler = Sampler(gen.sampling)
        stop_ids = set() if gen.ignore_eos else set(self.tokenizer.eos_token_ids)
        with metrics.stage(m.PREFILL, positions=int(embeds.shape[0])):
            logits, cache = self.model.prefill(embeds)
        out: list[int] = []
        for i in range(gen.max_new_tokens):
            tok = sampler(logits.numpy().astype(np.float32))
            metrics.mark_first_token()
            if tok in stop_ids:
                return out, "eos"
            out.append(tok)
            if stream.feed(tok):
                return out, "stop_string"
            if i + 1 == gen.max_new_tokens:
                break
            with metrics.stage(m.DECODE):
                logits = self.model.step(tok, cache)
        return out, "max_new_tokens"


def _frames_per_video(req: PreparedRequest) -> list[tuple[int, int]]:
    return [(i, info["frames"]) for i, info in enumerate(req.media_info) if info["kind"] == "video"]
