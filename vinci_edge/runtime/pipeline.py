"""The torch-free runtime: an engine folder answering questions about video, audio and images.

    pipe = Pipeline.from_engine("engine/")
    answer = pipe.ask("What happens?", video="clip.mp4", on_text=print)
    for piece in pipe.stream("What happens?", video="clip.mp4"): ...

One request, top to bottom:

    prompt  = the prompt builder (vinci_edge.request): media chunks, token ids, the plan
    banks   = each media chunk encoded once by its modality through the engine's stages
    embeds  = the stitch: the plan's TEG gather + CRTE rotation (numpy / C++ / CUDA kernel)
    text    = the shared decode loop (vinci_edge.generation) over the ONNX Runtime decoder

every stage timed by the same metrics object as the reference.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Generator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from vinci_edge import crte
from vinci_edge import metrics as m
from vinci_edge import stages as st
from vinci_edge.generation import Answer, GenerationConfig, consume, fit_context, generate
from vinci_edge.kinds import Kind
from vinci_edge.manifest import FUSED
from vinci_edge.plan import Plan
from vinci_edge.request.encode import EncodedCache, encode_banks
from vinci_edge.request.prompt import Prompt, PromptBuilder
from vinci_edge.runtime.backends import ORT_CPU, TENSORRT, make_stages
from vinci_edge.runtime.decoder import OrtDecoder
from vinci_edge.runtime.decoder_portable import PortableDecoder
from vinci_edge.runtime.engine import Engine
from vinci_edge.stitch import StitchInputs, select_stitch
from vinci_edge.stitch.library import load_library
from vinci_edge.text.tokenizer import TextTokenizer


class Pipeline:
    def __init__(
        self,
        engine: Engine,
        provider: str = "cpu",
        stage_providers: dict[str, str] | None = None,
        threads: int = 0,
        context: int | None = None,
        stitch: str | None = None,
        cache_chunks: int = 8,
        backend: str = ORT_CPU,
        plans: Path | None = None,
        decoder: str = FUSED,
    ) -> None:
        """`cache_chunks`: media chunks whose encoder rows are kept for the next question (0: none).
        `backend`: ort-cpu, ort-cuda or tensorrt (runtime/backends.py; refused here, before anything
        loads, when this machine cannot run it); `plans`: tensorrt's plan folder (default
        ENGINE/tensorrt, where build-engines writes). `decoder`: the ort-cpu backend's decoder graph
        ("fused", or "portable": TensorRT's graph, its maths checked on the CPU)."""
        self.engine = engine
        self.cfg = engine.config
        self.tokenizer = TextTokenizer.from_folder(engine.tokenizer_dir)
        self.text_table = engine.embed_table()
        self.prompts = PromptBuilder(self.cfg, self.tokenizer, encoders=engine.encoders_fingerprint)
        # Session creation is timed into `load_metrics`, apart from any request; `metrics_factory`
        # makes each request's Metrics (a profiler may swap both, e.g. for NVTX ranges).
        self.metrics_factory: Callable[[], m.Metrics] = m.Metrics
        self.load_metrics = m.Metrics()
        self.backend = backend
        self.stages = make_stages(
            backend,
            engine,
            self.text_table,
            provider,
            stage_providers,
            threads,
            context,
            lambda: self.load_metrics,
            plans,
            decoder=decoder,
        )
        self.cache = EncodedCache(cache_chunks)
        # stitch: None (the fastest CPU kernel), "cuda", "cpp" or "numpy"; a fallback's note joins the
        # answer's warnings
        self.stitch_name, self._stitch, self.stitch_note = select_stitch(stitch, num_threads=threads)
        if backend == TENSORRT and stitch is None:  # the kernel writes into the decoder's input buffer
            lib = load_library()
            if lib is not None and lib.has_cuda:
                self._stitch = self.stages.device_stitch(lib)
                self.stitch_name, self.stitch_note = self._stitch.name, None
        self.tables = crte.rotation_tables(self.cfg)

    @classmethod
    def from_engine(cls, folder: str | Path, **kwargs: Any) -> Pipeline:
        return cls(Engine.load(folder), **kwargs)

    def fork(self, stages: st.Stages) -> Pipeline:
        """A pipeline that shares this one's engine, tokenizer, tables and stitch but runs `stages`:
        a server gives each camera its own (a decoder sibling with its own KV cache, media stages
        that call the served models) without loading the engine again. Its encoder-row cache is its
        own; `stages` needs `runners` (stage name -> runner in use) only for `answer`'s report."""
        twin = copy.copy(self)
        twin.stages = stages
        twin.cache = EncodedCache(self.cache.max_chunks)
        twin.load_metrics = m.Metrics()
        return twin

    # ---- stages -------------------------------------------------------------------------------------
    def runner(self, name: str):
        """The stage's runner, created on first use."""
        return self.stages[name]

    @property
    def decoder(self) -> OrtDecoder | PortableDecoder:
        return self.stages[st.DECODER]

    def warmup(self) -> None:
        """Create every session now (otherwise the first request pays for it)."""
        for name in self.engine.stages:
            self.stages[name]

    # ---- one request -----------------------------------------------------------------------------------
    def prepare(self, question: str, metrics: m.Metrics | None = None, **options: Any) -> Prompt:
        """The prompt for a question and its media (`PromptBuilder.build`'s options: video, audio,
        image, num_frames, system_prompt), the engine's stages checked against the media first."""
        for kind, modality in self.prompts.modalities.items():
            if options.get(kind.label) is not None:
                for stage in modality.stages:
                    self.engine.require(stage, f"the request has {modality.noun}")
        self.engine.require(st.DECODER, "answering needs the LLM")
        return self.prompts.build(question, metrics or m.Metrics(), **options)

    def inputs_embeds(self, prompt: Prompt, metrics: m.Metrics) -> np.ndarray:
        """The decoder's input: every media chunk encoded (or taken from the cache), then stitched."""
        banks = encode_banks(
            prompt, self.prompts.modalities, self.stages, self.cfg.hidden_size, metrics, self.cache
        )
        return self.stitch(prompt.plan, banks, metrics)

    def stitch(self, plan: Plan, banks: dict[Kind, np.ndarray], metrics: m.Metrics) -> np.ndarray:
        """The plan's positions as the decoder's input: text rows, media rows TEG-gathered from the
        banks and CRTE-rotated (a live session stitches each segment as it is appended)."""
        with metrics.stage(m.STITCH, positions=len(plan), implementation=self.stitch_name):
            x = StitchInputs(plan, self.text_table, banks, self.tables)
            return self._stitch(x, self.decoder.dtype)

    def ask(
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

    def answer(
        self,
        prompt: Prompt,
        gen: GenerationConfig | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """Answer a prompt built elsewhere (`PromptBuilder.from_chunks`: a live session's window and
        question, answered from scratch)."""
        return consume(self._answer(prompt, gen or GenerationConfig(), self.metrics_factory()), on_text)

    def _run(self, question: str, gen: GenerationConfig, **media: Any) -> Generator[str, None, Answer]:
        metrics = self.metrics_factory()
        prompt = self.prepare(question, metrics=metrics, **media)
        return (yield from self._answer(prompt, gen, metrics))

    def _answer(
        self, prompt: Prompt, gen: GenerationConfig, metrics: m.Metrics
    ) -> Generator[str, None, Answer]:
        decoder = self.decoder
        max_new, warnings = fit_context(len(prompt.plan), gen.max_new_tokens, decoder.context)
        notes = [note for note in (self.stitch_note, _prefill_note(decoder)) if note]
        embeds = self.inputs_embeds(prompt, metrics)
        out = yield from generate(
            decoder, embeds, replace(gen, max_new_tokens=max_new), self.tokenizer, metrics
        )
        metrics.finish()
        return Answer(
            token_ids=out.token_ids,
            text=out.text,
            stop_reason=out.stop_reason,
            prompt_tokens=len(prompt.plan),
            metrics=metrics,
            backend="tensorrt" if self.backend == TENSORRT else "onnxruntime",
            warnings=prompt.warnings + notes + warnings,
            plan=prompt.plan.counts(),
            extra={
                "media": prompt.media_info,
                "stitch": self.stitch_name,
                "decoder_graph": self.stages.decoder_graph,
                "prefill_graph": getattr(decoder, "prefill_session", None) is not None,
                "providers": {k: r.provider for k, r in self.stages.runners.items()},
            },
        )


def _prefill_note(decoder: Any) -> str | None:
    """Why an engine's prefill graph is not used (OrtDecoder: this CPU's integer GEMM is not exact)."""
    return getattr(decoder, "prefill_note", None)
