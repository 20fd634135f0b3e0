"""The torch-free runtime: an engine folder answering questions about video, audio and images.

    pipe = Pipeline.from_engine("engine/")
    answer = pipe.ask("What happens?", video="clip.mp4", on_text=print)
    for piece in pipe.stream("What happens?", video="clip.mp4"): ...

One request: prepare (decode, preprocess, tokens, plan; shared with the reference) -> media stages ->
stitch (TEG gather + CRTE) -> decoder prefill -> one decoder step per token, every stage timed by
the same metrics object as the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vinci_edge import crte
from vinci_edge import metrics as m
from vinci_edge import timeline as tl
from vinci_edge.errors import PromptError
from vinci_edge.generation import Answer, GenerationConfig, TokenStream
from vinci_edge.request import PreparedRequest, prepare_request
from vinci_edge.runtime.backend import OrtStage, SessionSettings, resolve_provider
from vinci_edge.runtime.decoder import OrtDecoder
from vinci_edge.runtime.encoders import MediaEncoders
from vinci_edge.runtime.engine import Engine
from vinci_edge.sampling import Sampler
from vinci_edge.stitch import StitchInputs, select_stitch
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
    ) -> None:
        self.engine = engine
        self.cfg = engine.config
        self.tokenizer = TextTokenizer.from_folder(engine.tokenizer_dir)
        self.text_table = engine.embed_table()
        self.providers = {
            name: resolve_provider((stage_providers or {}).get(name, provider)) for name in engine.stages
        }
        self.threads = threads
        self.context = context
        # stitch: None (fastest CPU kernel), "cuda", "cpp" or "numpy"; a fallback's note joins the warnings
        self.stitch_name, self._stitch, self.stitch_note = select_stitch(stitch, num_threads=threads)
        self._runners: dict[str, Any] = {}
        # Session creation is timed into its own records (stage LOAD), apart from any request, so a
        # profiler can report load time separately; `metrics_factory` makes each request's Metrics
        # (a profiler may pass a subclass, e.g. one that also emits NVTX ranges).
        self.metrics_factory: Callable[[], m.Metrics] = m.Metrics
        self.load_metrics = m.Metrics()
        self.tables = {
            tl.VIDEO: crte.rotation_table(self.cfg.video_encoder.time)
            if self.cfg.video_encoder.time
            else None,
            tl.AUDIO: crte.rotation_table(self.cfg.sound_encoder.time)
            if self.cfg.sound_encoder.time
            else None,
            tl.IMAGE: None,
        }
        self.encoders = MediaEncoders(self.cfg, self.runner)

    @classmethod
    def from_engine(cls, folder: str | Path, **kwargs: Any) -> Pipeline:
        return cls(Engine.load(folder), **kwargs)

    # ---- stages -------------------------------------------------------------------------------------
    def runner(self, name: str):
        """The stage's runner, created on first use (a text-only question never loads the towers)."""
        if name not in self._runners:
            path = self.engine.stage_path(name)
            spec = self.engine.stages[name]
            settings = SessionSettings(
                provider=self.providers[name],
                threads=self.threads,
                optimization=spec.get("ort_optimization", "all"),
            )
            with self.load_metrics.stage(m.LOAD, stage=name) as attrs:
                if name == "decoder":
                    self._runners[name] = OrtDecoder(path, spec["spec"], settings, self.context)
                else:
                    self._runners[name] = OrtStage(name, path, settings, spec)
                attrs["provider"] = self._runners[name].provider
        return self._runners[name]

    @property
    def decoder(self) -> OrtDecoder:
        return self.runner("decoder")

    def warmup(self) -> None:
        """Create every session now (otherwise the first request pays for it)."""
        for name in self.engine.stages:
            self.runner(name)

    # ---- one request -----------------------------------------------------------------------------------
    def prepare(self, question: str, metrics: m.Metrics | None = None, **media: Any) -> PreparedRequest:
        if media.get("video") is not None:
            self.engine.require("vision", "the request has a video")
        if media.get("image") is not None:
            self.engine.require("vision", "the request has an image")
        if media.get("audio") is not None:
            self.engine.require("audio", "the request has an audio file")
        self.engine.require("decoder", "answering needs the LLM")
        return prepare_request(self.cfg, self.tokenizer, question, metrics=metrics, **media)

    def inputs_embeds(self, req: PreparedRequest, metrics: m.Metrics) -> np.ndarray:
        banks = self.encoders.banks(req, metrics)
        with metrics.stage(m.STITCH, positions=len(req.plan), implementation=self.stitch_name):
            x = StitchInputs(req.plan, self.text_table, banks, self.tables)
            return self._stitch(x, self.decoder.dtype)

    def ask(
        self,
        question: str,
        gen: GenerationConfig | None = None,
        on_text: Callable[[str], None] | None = None,
        **media: Any,
    ) -> Answer:
        """Answer a question; `on_text` receives the answer as it is generated."""
        run = self._run(question, gen or GenerationConfig(), **media)
        try:
            while True:
                piece = next(run)
                if on_text:
                    on_text(piece)
        except StopIteration as done:
            return done.value

    def stream(self, question: str, gen: GenerationConfig | None = None, **media: Any) -> Iterator[str]:
        """Yield the answer text piece by piece."""
        return (yield from self._run(question, gen or GenerationConfig(), **media))

    def _run(self, question: str, gen: GenerationConfig, **media: Any) -> Generator[str, None, Answer]:
        metrics = self.metrics_factory()
        req = self.prepare(question, metrics=metrics, **media)
        decoder = self.decoder
        decoder.reset()
        warnings = list(req.warnings) + ([self.stitch_note] if self.stitch_note else [])
        n_prompt = len(req.plan)
        if n_prompt >= decoder.context:
            raise PromptError(
                f"the prompt takes {n_prompt} positions but the decoder context is {decoder.context}",
                hint="use fewer frames (--num-frames), a shorter clip or question, or export with a larger "
                "--max-context",
            )
        max_new = min(gen.max_new_tokens, decoder.context - n_prompt)
        if max_new < gen.max_new_tokens:
            warnings.append(f"max_new_tokens cut to {max_new} to fit the decoder context")
        embeds = self.inputs_embeds(req, metrics)

        pending: list[str] = []
        stream = TokenStream(self.tokenizer, gen.stop_strings, pending.append)
        sampler = Sampler(gen.sampling)
        stop_ids = set() if gen.ignore_eos else set(self.tokenizer.eos_token_ids)
        with metrics.stage(m.PREFILL, positions=n_prompt) as attrs:
            attrs["provider"] = decoder.provider
            logits = decoder.append(embeds)
        tokens: list[int] = []
        reason = "max_new_tokens"
        for i in range(max_new):
            tok = sampler(logits)
            metrics.mark_first_token()
            if tok in stop_ids:
                reason = "eos"
                break
            tokens.append(tok)
            stopped = stream.feed(tok)
            yield from pending
            pending.clear()
            if stopped:
                reason = "stop_string"
                break
            if i + 1 == max_new:
                break
            with metrics.stage(m.DECODE):
                logits = decoder.append(self.text_table[tok][None])
        text = stream.finish()
        yield from pending
        metrics.finish()
        return Answer(
            token_ids=tokens,
            text=text,
            stop_reason=reason,
            prompt_tokens=n_prompt,
            metrics=metrics,
            backend="onnxruntime",
            warnings=warnings,
            plan=req.plan.counts(),
            extra={
                "media": req.media_info,
                "stitch": self.stitch_name,
                "providers": {k: r.provider for k, r in self._runners.items()},
            },
        )
