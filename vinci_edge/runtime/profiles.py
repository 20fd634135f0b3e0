"""TensorRT optimization profiles, derived from an engine's manifest.

A TensorRT engine built from a graph with dynamic axes needs, for each dynamic axis, the smallest,
the typical and the largest size it will be run with (min / opt / max); kernels are tuned for `opt`
and every run must stay inside [min, max]. The sizes come from what the runtime feeds each stage:

| stage | axis | min | opt | max |
|---|---|---|---|---|
| vision | frames (axis 0 of pixel_values) | 1 | num_video_frames, at most max | the runtime's batch (8) |
| image_projector | blocks | 1 | 1 | max_tiles + 1 |
| audio | chunks (30 s mel windows) | 1 | 1 | the runtime's batch (4) |
| decoder, profile `prefill` | sequence S | 1 | one clip's prompt | max_context |
|  | past P | 0 | 0 | max_context - 1 |
| decoder, profile `decode` | sequence S | 1 | 1 | 1 |
|  | past P | 0 | max_context / 2 | max_context - 1 |

The decoder gets two profiles (two execution contexts at run time): one tuned for reading a prompt,
one for single-token steps, as TensorRT-LLM does. A user override (`build-engines --profile
frames=1:4:8`) replaces one axis's range in every profile that has it; it is checked against the
manifest (`apply_overrides`). The runtime reads the built engine's max back and batches to it.

Pure Python, no TensorRT: tested on the CPU against a real exported engine's manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vinci_edge import stages as st
from vinci_edge.errors import EngineError
from vinci_edge.manifest import Manifest, StageEntry, TensorInfo

# What the runtime feeds per call along axis 0 (runtime/stages.py MAX_BATCH; repeated here, and
# checked equal in tests/test_build_engines.py, so the profile module needs no ONNX Runtime import).
RUNTIME_BATCH = {st.VISION: 8, st.AUDIO: 4}

SEQUENCE = "sequence"  # the decoder's new positions S
PAST = "past"  # the decoder's cached positions P
PREFILL = "prefill"
DECODE = "decode"

NO_PORTABLE_DECODER = "this engine has no portable decoder graph; re-export with a vinci-edge that writes one"


@dataclass(frozen=True)
class AxisRange:
    """min <= opt <= max sizes of one dynamic axis."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.opt <= self.max or self.max < 1:
            raise ValueError(f"{self.min}:{self.opt}:{self.max} is not min <= opt <= max with max >= 1")

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"

    def contains(self, n: int) -> bool:
        return self.min <= n <= self.max


@dataclass(frozen=True)
class TensorShapes:
    """One input's min / opt / max shapes, as `IOptimizationProfile.set_shape` takes them."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    """One optimization profile: a range per named axis, and the input shapes they give."""

    name: str
    axes: dict[str, AxisRange]
    inputs: tuple[TensorShapes, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "axes": {k: str(v) for k, v in self.axes.items()},
            "inputs": {t.name: [list(t.min), list(t.opt), list(t.max)] for t in self.inputs},
        }


# --------------------------------------------------------------------------------------------------
# The portable decoder graph


def portable_decoder(manifest: Manifest) -> StageEntry | None:
    """The decoder graph TensorRT builds (`Manifest.decoder_for("tensorrt")`: plain attention, past /
    present as graph I/O), or None for an engine exported before export wrote it. The fused graph
    ONNX Runtime runs (GroupQueryAttention, com.microsoft ops, the KV cache shared in place through
    `seqlens_k`) is never handed back: TensorRT's parser has no such op."""
    try:
        entry = manifest.decoder_for("tensorrt")
    except EngineError:
        return None
    names = {t.name for t in entry.inputs}
    if "seqlens_k" in names or "inputs_embeds" not in names:
        return None
    return entry


# --------------------------------------------------------------------------------------------------
# Derivation


def default_axes(manifest: Manifest, stage: str) -> dict[str, dict[str, AxisRange]]:
    """profile name -> axis -> range, for one stage, from the model config and the manifest."""
    cfg = manifest.config
    if stage == st.DECODER:
        ctx = manifest.decoder.max_context
        prompt = cfg.num_video_frames * cfg.tokens_per_frame + cfg.audio_tokens_per_chunk + 64
        return {
            PREFILL: {SEQUENCE: AxisRange(1, min(prompt, ctx), ctx), PAST: AxisRange(0, 0, ctx - 1)},
            DECODE: {SEQUENCE: AxisRange(1, 1, 1), PAST: AxisRange(0, max(ctx // 2, 1) - 1, ctx - 1)},
        }
    entry = manifest.stages[stage]
    axis = _batch_axis(entry)
    if stage == st.VISION:
        top = RUNTIME_BATCH[st.VISION]
        return {"default": {axis: AxisRange(1, max(1, min(cfg.num_video_frames, top)), top)}}
    if stage == st.AUDIO:
        return {"default": {axis: AxisRange(1, 1, RUNTIME_BATCH[st.AUDIO])}}
    tiles = int(manifest.model_config.get("root", {}).get("max_tiles", 12))
    return {"default": {axis: AxisRange(1, 1, tiles + 1)}}


def _batch_axis(entry: StageEntry) -> str:
    """The name of a media stage's one dynamic axis (axis 0 of its input)."""
    shape = entry.inputs[0].shape or []
    names = [d for d in shape if isinstance(d, str)]
    if len(names) != 1 or shape[0] != names[0]:
        raise EngineError(
            f"stage input {entry.inputs[0].name} has shape {shape}: expected one dynamic axis, first",
            hint="re-export the engine with this vinci-edge",
        )
    return names[0]


def stage_axes(manifest: Manifest, stage: str) -> set[str]:
    return {a for axes in default_axes(manifest, stage).values() for a in axes}


def apply_overrides(
    manifest: Manifest, stage: str, axes: dict[str, dict[str, AxisRange]], overrides: dict[str, AxisRange]
) -> dict[str, dict[str, AxisRange]]:
    """`axes` with each override that names one of this stage's axes put in every profile that has
    it. The decoder's sequence / past must fit its KV cache (max_context)."""
    out = {p: dict(a) for p, a in axes.items()}
    for name, rng in overrides.items():
        for profile in out.values():
            if name in profile:
                profile[name] = rng
    if stage == st.DECODER:
        ctx = manifest.decoder.max_context
        for name, limit in ((SEQUENCE, ctx), (PAST, ctx - 1)):
            if name in overrides and overrides[name].max > limit:
                raise EngineError(
                    f"--profile {name}={overrides[name]}: the decoder holds {ctx} positions, so "
                    f"{name} can be at most {limit}",
                    hint="lower the max, or export with a larger --max-context",
                )
    return out


def check_override_names(manifest: Manifest, stages: list[str], overrides: dict[str, AxisRange]) -> None:
    """Every overridden axis must belong to a stage being built."""
    known = set()
    for stage in stages:
        known |= stage_axes(manifest, stage)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise EngineError(
            f"--profile names axis {', '.join(unknown)}, which no stage being built has",
            hint=f"the axes are {', '.join(sorted(known)) or 'none'}",
        )


def stage_profiles(
    manifest: Manifest,
    stage: str,
    entry: StageEntry,
    overrides: dict[str, AxisRange] | None = None,
) -> list[Profile]:
    """The optimization profiles of one stage graph (`entry`: the graph being built, which for the
    decoder is the portable graph)."""
    axes = apply_overrides(manifest, stage, default_axes(manifest, stage), overrides or {})
    if stage == st.DECODER:
        return [Profile(n, a, _decoder_inputs(manifest, a)) for n, a in axes.items()]
    return [Profile(n, a, tuple(_media_input(t, a) for t in entry.inputs)) for n, a in axes.items()]


def _media_input(t: TensorInfo, axes: dict[str, AxisRange]) -> TensorShapes:
    shape = t.shape or []
    dims = []
    for d in shape:
        if isinstance(d, str):
            if d not in axes:
                raise EngineError(f"input {t.name} has dynamic axis '{d}' with no range", hint=REEXPORT_HINT)
            dims.append(axes[d])
        else:
            dims.append(AxisRange(d, d, d))
    return TensorShapes(t.name, *(tuple(getattr(r, k) for r in dims) for k in ("min", "opt", "max")))


REEXPORT_HINT = "re-export the engine with this vinci-edge"


def _decoder_inputs(manifest: Manifest, axes: dict[str, AxisRange]) -> tuple[TensorShapes, ...]:
    """The portable decoder's inputs: inputs_embeds (1, S, D); past_key/value_i (1, kv, P, hd)."""
    spec = manifest.decoder
    s, p = axes[SEQUENCE], axes[PAST]
    out = [TensorShapes("inputs_embeds", *((1, n, spec.hidden_size) for n in (s.min, s.opt, s.max)))]
    for i in range(spec.num_layers):
        for kind in ("key", "value"):
            out.append(
                TensorShapes(
                    f"past_{kind}_{i}",
                    *((1, spec.kv_heads, n, spec.head_dim) for n in (p.min, p.opt, p.max)),
                )
            )
    return tuple(out)
