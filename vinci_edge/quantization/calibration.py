"""Calibration data: real clips and real text, prepared by the runtime's own code.

    sources (videos, audio files, text files, size, seed)
      -> N requests: a seeded window of real text as the question, with a clip, an audio file or
         nothing, prepared by `Pipeline.prepare` (decode, preprocess, tokens, plan)
      -> vision samples   the frames the request feeds vision.onnx
         audio samples    the mel chunks it feeds audio.onnx
         image_projector  the select-layer features of those frames, repeated per S2 scale (what the
                          video path hands the projector inside vision.onnx)
         decoder samples  the inputs_embeds the fp32 engine's stitch produces (media tokens + text),
                          i.e. what the decoder really sees at prefill

Everything is seeded: the same sources, size and seed give the same samples and the same hash,
which the manifest records with the file list and the sample counts.

Default sources, when none are given (a decision: calibrate on real media, never on generated
patterns, and never on the text the accuracy report measures perplexity on):
- videos: the real clips Debian installs (movie-hello.mp4 from forensics-samples, whose sound
  track also calibrates the audio tower; Megamind.avi from opencv-doc);
- audio: none beyond the clips' sound tracks (--calib-audio adds files);
- text: the license texts in /usr/share/common-licenses except GPL-3, the perplexity text.
Where a default is not installed and a stage to calibrate would get no samples, `validate` refuses
before anything is written and says which option to pass (--calib-video, --calib-audio,
--calib-text); a stage that is not calibrated (int4, int8-dynamic, fp32) needs no sources at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vinci_edge import stages as st
from vinci_edge.errors import ConfigError, MediaError
from vinci_edge.manifest import DecoderSpec
from vinci_edge.progress import Progress, silent
from vinci_edge.stages import STAGE_NAMES

DEBIAN_CLIPS = (
    Path("/usr/share/forensics-samples/original-files/movie2/movie-hello.mp4"),
    Path("/usr/share/doc/opencv-doc/examples/data/Megamind.avi"),
)
LICENSES = Path("/usr/share/common-licenses")
# Perplexity is measured on GPL-3 (see accuracy/settings.py); the default calibration text leaves it out so
# the accuracy numbers are not measured on the calibration data.
EVAL_TEXT = LICENSES / "GPL-3"
MIN_WORDS = 16  # a text file shorter than this is not a calibration text
MAX_POSITIONS = 512  # per calibration request: static ranges need coverage, not long sequences
FRAME_CHOICES = (4, 8, 16)  # frames per video request; different counts sample different instants


@dataclass
class CalibrationSources:
    videos: list[Path]
    audios: list[Path]
    texts: list[Path]
    size: int = 16
    seed: int = 0

    @classmethod
    def resolve(
        cls,
        videos: list[Path] | None,
        audios: list[Path] | None,
        texts: list[Path] | None,
        size: int,
        seed: int,
        stages: set[str] | frozenset[str] = frozenset(STAGE_NAMES),
    ) -> CalibrationSources:
        """Defaults for what is not given (module docstring), then `validate(stages)`, where `stages`
        are the stages that need calibration samples. Reads files, writes nothing."""
        if videos is None:
            videos = [p for p in DEBIAN_CLIPS if p.is_file()]
        if texts is None:
            texts = default_texts()
        src = cls(
            [Path(v) for v in videos], [Path(a) for a in audios or []], [Path(t) for t in texts], size, seed
        )
        src.validate(stages)
        return src

    def validate(self, stages: set[str] | frozenset[str] = frozenset(STAGE_NAMES)) -> None:
        """Every file must be there and readable, and every stage in `stages` must get samples,
        before anything is quantized."""
        from vinci_edge.media import probe

        if self.size < 1:
            raise ConfigError(
                f"--calib-size {self.size}: the calibration set would be empty",
                hint="pass --calib-size 1 or more (16 by default)",
            )
        if not self.texts:
            raise ConfigError(
                "the calibration set has no text",
                hint="pass --calib-text FILE (plain English text; the Debian license texts in "
                f"{LICENSES} are used by default when installed)",
            )
        has_sound = False
        for flag, paths, stream in (("video", self.videos, "has_video"), ("audio", self.audios, "has_audio")):
            for path in paths:
                info = probe(path)  # raises MediaError (missing, not media) with its own hint
                if not info[stream]:
                    raise MediaError(
                        f"--calib-{flag} {path} holds no {flag} stream",
                        hint=f"pass {flag} files to --calib-{flag}",
                    )
                has_sound = has_sound or info["has_audio"]
        if stages & {st.VISION, st.IMAGE_PROJECTOR} and not self.videos:
            raise ConfigError(
                "the calibration set has no video for the vision stages, and none of the default clips "
                f"({', '.join(str(p) for p in DEBIAN_CLIPS)}) is installed",
                hint="pass --calib-video FILE (a real clip, repeatable), or quantize only the decoder "
                "(--precision decoder=...)",
            )
        if st.AUDIO in stages and not has_sound:
            raise ConfigError(
                "the calibration set has no sound for the audio stage (no --calib-audio and no clip "
                "with an audio track)",
                hint="pass --calib-audio FILE (speech or a clip's sound), or leave the audio stage in "
                "fp32 (--precision vision=...,decoder=...)",
            )
        for path in self.texts:
            if not path.is_file():
                raise MediaError(f"calibration text {path} is not a file", hint="check the --calib-text path")
            try:
                words = path.read_text(encoding="utf-8", errors="strict").split()
            except (OSError, UnicodeDecodeError) as exc:
                raise MediaError(
                    f"calibration text {path} cannot be read as UTF-8 text ({exc})",
                    hint="pass plain-text files to --calib-text",
                ) from exc
            if len(words) < MIN_WORDS:
                raise MediaError(
                    f"calibration text {path} holds {len(words)} words; too little to calibrate on",
                    hint=f"pass files with real text (at least {MIN_WORDS} words)",
                )

    def record(self) -> dict[str, Any]:
        return {
            "videos": [str(p) for p in self.videos],
            "audios": [str(p) for p in self.audios],
            "texts": [str(p) for p in self.texts],
            "requests": self.size,
            "seed": self.seed,
        }


def default_texts() -> list[Path]:
    """The license texts Debian installs, GPL-3 excepted (it is the perplexity text); [] without them."""
    if not LICENSES.is_dir():
        return []
    seen: set[Path] = set()
    out = []
    for p in sorted(LICENSES.iterdir()):
        real = p.resolve()
        if p.is_file() and real != EVAL_TEXT.resolve() and real not in seen:
            seen.add(real)
            out.append(p)
    return out


@dataclass
class CalibrationSet:
    """Samples per stage (lists of graph feeds, without the decoder's KV buffers) + the record."""

    samples: dict[str, list[dict[str, np.ndarray]]]
    record: dict[str, Any]

    def for_stage(self, stage: str) -> list[dict[str, np.ndarray]]:
        got = self.samples.get(stage) or []
        if not got:
            raise ConfigError(
                f"the calibration set has no samples for the {stage} stage",
                hint="pass --calib-video (vision) / --calib-audio or a video with sound (audio)",
            )
        return got

    def stage_record(self, stage: str) -> dict[str, Any]:
        return {**self.record["sources"], **self.record["stages"].get(stage, {})}


def build_calibration(
    engine_dir: Path, sources: CalibrationSources, progress: Progress | None = None
) -> CalibrationSet:
    """Run the fp32 engine's own preprocessing (and its towers + stitch) on the sources."""
    from vinci_edge import metrics as m
    from vinci_edge.runtime.pipeline import Pipeline

    say = progress or silent
    pipe = Pipeline.from_engine(engine_dir)
    stages = set(pipe.engine.stages)
    rng = np.random.default_rng(sources.seed)
    texts = [p.read_text(encoding="utf-8").split() for p in sources.texts]
    media = _media_plan(sources, stages, pipe.cfg.has_sound)
    samples: dict[str, list[dict[str, np.ndarray]]] = {s: [] for s in stages}
    seen_media: set[tuple[str, int]] = set()
    limit = min(MAX_POSITIONS, pipe.decoder.context - 1)
    for k in range(sources.size):
        kind, path = media[k % len(media)]
        words = texts[int(rng.integers(len(texts)))]
        n_words = int(rng.integers(24, 160))
        start = int(rng.integers(0, max(1, len(words) - n_words)))
        question = " ".join(words[start : start + n_words])
        n_frames = int(rng.choice(FRAME_CHOICES))
        kwargs: dict[str, Any] = {}
        if kind == "video":
            kwargs = {"video": path, "num_frames": n_frames}
        elif kind == st.AUDIO:
            kwargs = {"audio": path}
        req = pipe.prepare(question, metrics=m.Metrics(), **kwargs)
        if len(req.plan) > limit:  # a long text window: cut the question, keep the media
            question = " ".join(question.split()[: max(8, n_words * limit // len(req.plan) - 8)])
            req = pipe.prepare(question, metrics=m.Metrics(), **kwargs)
        embeds = pipe.inputs_embeds(req, m.Metrics())[:limit]
        samples.setdefault(st.DECODER, []).append({"inputs_embeds": np.asarray(embeds, np.float32)[None]})
        _tower_samples(pipe, req, samples, seen_media, (str(path), n_frames))
        say(
            f"calibration request {k + 1}/{sources.size}: "
            f"{kind + ' ' + Path(path).name if path else 'text only'}, {embeds.shape[0]} positions"
        )
    samples = {s: v for s, v in samples.items() if s in stages}
    stage_records = {s: _stage_record(s, v) for s, v in samples.items()}
    return CalibrationSet(samples, {"sources": sources.record(), "stages": stage_records})


def _media_plan(
    sources: CalibrationSources, stages: set[str], has_sound: bool
) -> list[tuple[str, str | None]]:
    """Which medium each request carries, cycled: every clip, every audio file, and text alone."""
    plan: list[tuple[str, str | None]] = []
    if st.VISION in stages:
        plan += [("video", str(v)) for v in sources.videos]
    if st.AUDIO in stages and has_sound:
        plan += [("audio", str(a)) for a in sources.audios]
    plan.append(("text", None))
    return plan


def _tower_samples(pipe, req, samples: dict[str, list[dict[str, np.ndarray]]], seen: set, key: tuple) -> None:
    """Frames once per (clip, frame count), audio once per file: repeats add nothing to max ranges."""
    if req.frames is not None and st.VISION in pipe.engine.stages and key not in seen:
        seen.add(key)
        samples.setdefault(st.VISION, []).append({"pixel_values": req.frames})
        if st.IMAGE_PROJECTOR in pipe.engine.stages:
            feats = pipe.runner(st.VISION).run({"pixel_values": req.frames}, ["features"])["features"]
            n_scales = len(pipe.cfg.s2_scales)
            samples.setdefault(st.IMAGE_PROJECTOR, []).append(
                {"features": np.concatenate([feats] * n_scales, -1)}
            )
    if req.mel_chunks is not None and st.AUDIO in pipe.engine.stages and key[0] not in seen:
        seen.add(key[0])
        samples.setdefault(st.AUDIO, []).append({"mel": req.mel_chunks})


def _stage_record(stage: str, feeds: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    h = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            h.update(name.encode())
            h.update(np.ascontiguousarray(feed[name]).tobytes())
    rows = sum(int(next(iter(f.values())).shape[1 if stage == st.DECODER else 0]) for f in feeds)
    unit = {
        st.DECODER: "positions",
        st.VISION: "frames",
        st.AUDIO: "mel_chunks",
        st.IMAGE_PROJECTOR: "tiles",
    }[stage]
    return {"samples": len(feeds), unit: rows, "sha256": h.hexdigest()}


# --------------------------------------------------------------------------------------------------
# Feeding the samples to a graph


def decoder_feed(embeds: np.ndarray, spec: DecoderSpec) -> dict[str, np.ndarray]:
    """One prefill of the decoder graph from position 0: the past_key dims are symbolic, so the KV
    buffers are sized to the sequence (the graph writes the new positions into them)."""
    s = int(embeds.shape[1])
    feed = {
        "inputs_embeds": np.ascontiguousarray(embeds, np.float32),
        "seqlens_k": np.array([s - 1], np.int32),
        "total_sequence_length": np.array(s, np.int32),
    }
    shape = (1, spec.kv_heads, s, spec.head_dim)
    for i in range(spec.num_layers):
        feed[f"past_key_{i}"] = np.zeros(shape, np.float32)
        feed[f"past_value_{i}"] = np.zeros(shape, np.float32)
    return feed


def iter_feeds(
    stage: str, samples: list[dict[str, np.ndarray]], spec: DecoderSpec | None
) -> Iterator[dict[str, np.ndarray]]:
    for s in samples:
        yield decoder_feed(s["inputs_embeds"], spec) if stage == st.DECODER else s


def make_reader(stage: str, samples: list[dict[str, np.ndarray]], spec: DecoderSpec | None):
    """An ONNX Runtime CalibrationDataReader (as ModelOpt and ORT's static quantizer take) that builds
    each feed when asked, so the KV buffers of all samples are never in memory at once."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter_feeds(stage, samples, spec)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

        def get_first(self) -> dict[str, np.ndarray]:
            return next(iter_feeds(stage, samples[:1], spec))

        def rewind(self) -> None:
            self._it = iter_feeds(stage, samples, spec)

        def __len__(self) -> int:
            return len(samples)

    return Reader()
