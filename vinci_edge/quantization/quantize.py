"""`vinci-edge quantize`: an fp32 engine folder in, a quantized engine folder out.

    parse + check the request (precisions, stages, target, input engine, calibration files)   no I/O
    build the calibration set, if a precision needs it          (the fp32 engine's own pipeline)
    one handler per stage -> <stage>.onnx in OUT/.partial       (the others are copied unchanged)
      + the fp32 graph's provenance props                       (checked by the runtime)
    manifest: per stage precision, method, tool + version, calibration record
    rename .partial -> OUT

Everything that can be refused is refused before any work starts, and any failure removes the
.partial folder (and the folders made for it): a failed run leaves nothing that looks like an
engine, and an engine that --force was to replace stays as it was. --force replaces only an engine
folder (or an empty one), never a folder holding something else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import time
from pathlib import Path

from vinci_edge import __version__
from vinci_edge import stages as st
from vinci_edge.errors import ConfigError, EngineError
from vinci_edge.export.decoder_portable import write_portable
from vinci_edge.export.onnx_writer import add_props
from vinci_edge.manifest import MANIFEST, PORTABLE, STAGE_PROPS, Manifest, StageEntry, TextEntry
from vinci_edge.output_folder import ENGINE, check_output_folder, output_folder, partial_folder
from vinci_edge.progress import Progress, silent
from vinci_edge.quantization import graph as g
from vinci_edge.quantization.calibration import CalibrationSources, build_calibration
from vinci_edge.quantization.fp8 import Fp8
from vinci_edge.quantization.handler import Handler, StageJob
from vinci_edge.quantization.int4 import HEAD_BITS, Int4, Int4Awq
from vinci_edge.quantization.int4_dq import Int4Dq
from vinci_edge.quantization.int8 import Int8Dynamic, Int8Static
from vinci_edge.quantization.int8_compute import INT8_RANGES, PREFILL_BLOCKWISE, REDUCED, Int8Compute
from vinci_edge.quantization.modelopt_onnx import AUTO, DECODER_LAYERS
from vinci_edge.quantization.targets import ALL_PRECISIONS, check_target
from vinci_edge.stages import STAGE_NAMES

HANDLERS: dict[str, Handler] = {
    h.precision: h for h in (Int8Dynamic(), Int8Compute(), Int8Static(), Fp8(), Int4(), Int4Awq(), Int4Dq())
}
SMOOTHQUANT_PRECISIONS = ("int8", "int8-dynamic", "int8-compute")
KEEP_FP32_PRECISIONS = ("int8", "fp8")


_RANGE_HINT = (
    "reduced (default: exact on every CPU) or full (8-bit activations: CPUs with VNNI / AMX, Arm dot "
    "products; docs/quantization.md, 'int8-compute')"
)


_BLOCKWISE_HINT = (
    f"a comma list of {', '.join(DECODER_LAYERS)}, or none (every kind per position); "
    "docs/quantization.md, 'int8-compute'"
)


def parse_precisions(spec: str, stages: list[str]) -> dict[str, str]:
    """'int8' (every stage) or 'vision=int8,audio=int8,decoder=int4' -> {stage: precision}.

    Stages not named stay fp32, except image_projector, which follows vision (it holds the same
    projector weights, used for dynamic-S2 images)."""
    spec = (spec or "").strip()
    if not spec:
        raise ConfigError("--precision is empty", hint=_precision_hint())
    if "=" not in spec:
        _check_precision(spec)
        return {s: spec for s in stages}
    out: dict[str, str] = {}
    for item in spec.split(","):
        if "=" not in item:
            raise ConfigError(f"--precision item {item!r} is not STAGE=PRECISION", hint=_precision_hint())
        stage, precision = (x.strip() for x in item.split("=", 1))
        if stage not in STAGE_NAMES:
            raise ConfigError(
                f"unknown stage {stage!r} in --precision", hint=f"stages: {', '.join(STAGE_NAMES)}"
            )
        if stage not in stages:
            raise ConfigError(
                f"--precision names the {stage} stage, which this engine does not have",
                hint=f"the engine's stages: {', '.join(stages)}",
            )
        _check_precision(precision)
        out[stage] = precision
    if st.IMAGE_PROJECTOR in stages and "image_projector" not in out and "vision" in out:
        out[st.IMAGE_PROJECTOR] = out[st.VISION]
    return {s: out.get(s, "fp32") for s in stages}


def _check_precision(p: str) -> None:
    if p not in ALL_PRECISIONS:
        raise ConfigError(f"unknown precision {p!r}", hint=_precision_hint())


def _precision_hint() -> str:
    return (
        f"precisions: {', '.join(ALL_PRECISIONS)}; one for every stage (--precision int8-dynamic) or per "
        "stage (--precision vision=int8,audio=int8,decoder=int4)"
    )


def load_fp32_manifest(engine: Path) -> Manifest:
    """The input engine's manifest, refused unless it is an fp32 engine straight from export."""
    from vinci_edge.runtime.engine import Engine

    manifest = Engine.load(engine).manifest  # every check the runtime does
    if manifest.quantization is not None or any(
        p.get("method", "none") != "none" for p in manifest.precision.values()
    ):
        done = (manifest.quantization or {}).get("precisions") or {
            s: p.get("precision", p.get("method")) for s, p in manifest.precision.items()
        }
        raise EngineError(
            f"{engine} is already a quantized engine ({', '.join(f'{k}={v}' for k, v in done.items())})",
            hint="quantize the fp32 engine that `vinci-edge export` wrote: quantizing a quantized graph "
            "compounds the rounding and loses the record of what was done",
        )
    wrong = {s: e.dtype for s, e in manifest.stages.items() if e.dtype != "float32"}
    if wrong:
        raise EngineError(
            f"{engine} is not an fp32 engine (stage dtypes {wrong})",
            hint="export with --dtype fp32 and quantize that",
        )
    return manifest


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quantize_engine(
    engine: str | Path,
    out: str | Path,
    precision: str,
    target: str | None = None,
    calib_videos: list[Path] | None = None,
    calib_audios: list[Path] | None = None,
    calib_texts: list[Path] | None = None,
    calib_size: int = 16,
    seed: int = 0,
    smoothquant: float | None = None,
    keep_fp32: list[str] | None = None,
    head_bits: int | None = None,
    int8_range: str | None = None,
    prefill_blockwise: list[str] | None = None,
    force: bool = False,
    progress: Progress | None = None,
    handlers: dict[str, Handler] | None = None,
) -> Manifest:
    """Write the quantized engine to `out` and return its manifest. `handlers` overrides the
    handler of a precision (Python API only: e.g. `Int8Dynamic("matmul-integer")` for comparisons)."""
    say = progress or silent
    engine, out = Path(engine), Path(out)
    manifest = load_fp32_manifest(engine)
    stages = list(manifest.stages)
    precisions = parse_precisions(precision, stages)
    check_target(target, precisions)
    if smoothquant is not None:
        if not 0.0 <= smoothquant <= 1.0:
            raise ConfigError(
                f"--smoothquant {smoothquant} is outside [0, 1]", hint="typical values: 0.5 - 0.85"
            )
        if precisions.get(st.DECODER) not in SMOOTHQUANT_PRECISIONS:
            raise ConfigError(
                "--smoothquant applies to the decoder at int8, int8-dynamic or int8-compute",
                hint=f"the decoder's precision here is {precisions.get('decoder')}",
            )
    keep = tuple(keep_fp32 or ())
    if keep:
        unknown = sorted(set(keep) - set(DECODER_LAYERS) - {AUTO})
        if unknown:
            raise ConfigError(
                f"--keep-fp32: unknown decoder layers {', '.join(unknown)}",
                hint=f"choose from {', '.join(DECODER_LAYERS)}, or 'auto' (a sensitivity sweep chooses)",
            )
        if AUTO in keep and len(keep) > 1:
            raise ConfigError(
                "--keep-fp32 auto chooses the layers itself: it takes no layer names beside it",
                hint="pass either --keep-fp32 auto or a list of layers",
            )
        if precisions.get(st.DECODER) not in KEEP_FP32_PRECISIONS:
            raise ConfigError(
                "--keep-fp32 applies to the decoder at int8 or fp8 (static Q/DQ)",
                hint=f"the decoder's precision here is {precisions.get('decoder')}",
            )
    if head_bits is not None:
        if head_bits not in HEAD_BITS:
            raise ConfigError(f"--head-bits {head_bits}: the head is stored at 8 or 4 bits", hint="8 or 4")
        if precisions.get(st.DECODER) not in ("int4", "int4-dq"):
            raise ConfigError(
                "--head-bits applies to the decoder at int4 or int4-dq",
                hint=f"the decoder's precision here is {precisions.get('decoder')}",
            )
    if int8_range is not None:
        if int8_range not in INT8_RANGES:
            raise ConfigError(
                f"--int8-range {int8_range!r} is not one of {', '.join(INT8_RANGES)}", hint=_RANGE_HINT
            )
        if "int8-compute" not in precisions.values():
            raise ConfigError("--int8-range applies to int8-compute stages", hint=_RANGE_HINT)
    if prefill_blockwise is not None:
        unknown = [k for k in prefill_blockwise if k not in DECODER_LAYERS]
        if unknown:
            raise ConfigError(
                f"--int8-prefill-blockwise: unknown layer kind {unknown[0]!r}", hint=_BLOCKWISE_HINT
            )
        if precisions.get(st.DECODER) != "int8-compute":
            raise ConfigError(
                "--int8-prefill-blockwise applies to an int8-compute decoder", hint=_BLOCKWISE_HINT
            )
    if int8_range is not None or prefill_blockwise is not None:
        handler = Int8Compute(
            int8_range=int8_range or REDUCED,
            prefill_blockwise=PREFILL_BLOCKWISE if prefill_blockwise is None else tuple(prefill_blockwise),
        )
        handlers = {"int8-compute": handler, **(handlers or {})}
    registry = {**HANDLERS, **(handlers or {})}
    by_stage = {s: registry[p] for s, p in precisions.items() if p != "fp32"}
    if not by_stage:
        raise ConfigError("every stage would stay fp32: nothing to quantize", hint=_precision_hint())
    for h in {id(h): h for h in by_stage.values()}.values():
        h.check_available()
    check_output_folder(out, kind=ENGINE, force=force, inputs={"engine": engine})

    tmp = partial_folder(out)  # what output_folder below writes into
    work = tmp / ".work"
    jobs = {
        s: StageJob(
            s,
            engine / manifest.stages[s].file,
            tmp / manifest.stages[s].file,
            work / s,
            manifest.stages[s],
            smoothquant=smoothquant if s == st.DECODER else None,
            keep_fp32=keep if s == st.DECODER else (),
            head_bits=head_bits or 8,
            say=say,
        )
        for s in by_stage
    }
    sources = None
    calibrated = {s for s, j in jobs.items() if by_stage[s].needs_calibration(j)}
    if calibrated:
        sources = CalibrationSources.resolve(
            calib_videos, calib_audios, calib_texts, calib_size, seed, stages=calibrated
        )

    started = time.perf_counter()
    with output_folder(out, kind=ENGINE, force=force, inputs={"engine": engine}, progress=say):
        calibration = None
        if sources is not None:
            say(f"building the calibration set ({calib_size} requests, seed {seed})")
            calibration = build_calibration(engine, sources, say)
            for j in jobs.values():
                j.calibration = calibration
        new = Manifest.from_dict(manifest.to_dict())  # a copy to edit
        versions: dict[str, str] = {}
        for stage in stages:
            entry = new.stages[stage]
            if stage not in by_stage:
                _copy_stage(engine, tmp, entry.file)
                new.precision[stage] = {**new.precision.get(stage, {}), "precision": "fp32", "method": "none"}
                continue
            handler, job = by_stage[stage], jobs[stage]
            t0 = time.perf_counter()
            result = handler.run(job)
            _keep_provenance(job.src, job.dst)
            if result.prefill is not None:  # a decoder prefill graph beside the stage's (int8_compute.py)
                _keep_provenance(job.src, tmp / result.prefill.file)
                entry.prefill = result.prefill
            shutil.rmtree(job.workdir, ignore_errors=True)
            versions[result.tool] = result.tool_version
            entry.external_data = result.external_data
            entry.precision = precisions[stage]
            entry.ort_optimization = result.ort_optimization
            needs_calib = handler.needs_calibration(job)
            new.precision[stage] = {
                "dtype": entry.dtype,
                "precision": precisions[stage],
                "method": result.method,
                "tool": result.tool,
                "tool_version": result.tool_version,
                "calibration": calibration.stage_record(stage) if needs_calib and calibration else None,
                "details": result.details,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            size, was = g.stage_bytes(tmp, entry.file), g.stage_bytes(engine, entry.file)
            say(f"{stage}: {precisions[stage]} written ({size / 1e6:.1f} MB, fp32 {was / 1e6:.1f} MB)")
        shutil.rmtree(work, ignore_errors=True)
        new.decoder_graphs = _portable_decoder(tmp, new, say)
        _copy_text(engine, tmp, new.text)
        new.exporters = {**new.exporters, **versions}
        new.created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        new.quantization = {
            "source_engine": str(engine.resolve()),
            "source_manifest_sha256": _sha256(engine / MANIFEST),
            "target": target,
            "precisions": precisions,
            "smoothquant": smoothquant,
            "keep_fp32": list(keep),
            "head_bits": head_bits,
            **({"int8_range": int8_range or REDUCED} if "int8-compute" in precisions.values() else {}),
            "calibration": calibration.record if calibration else None,
            "vinci_edge": __version__,
        }
        new.write(tmp)
    say(f"quantized engine written to {out} in {time.perf_counter() - started:.1f} s")
    return new


def _portable_decoder(folder: Path, new: Manifest, say: Progress) -> dict[str, StageEntry]:
    """The quantized engine's portable decoder graph, derived from its (quantized) fused one as export
    derives it (export/decoder_portable.py), sharing its weights file - when the source engine had
    one. A precision whose layers are contrib ops (`int4`'s MatMulNBits, `int8-dynamic`) has no
    portable graph: ONNX Runtime runs the fused one, and TensorRT runs none of them."""
    if PORTABLE not in new.decoder_graphs or st.DECODER not in new.stages:
        return {}
    entry, nonstandard = write_portable(folder, new.stages[st.DECODER])
    if nonstandard:
        (folder / entry.file).unlink()
        say(f"decoder: no portable graph at {entry.precision} (its layers are {', '.join(nonstandard)})")
        return {}
    return {PORTABLE: entry}


def _keep_provenance(src: Path, dst: Path) -> None:
    """Give the quantized graph `dst` the provenance props of its fp32 graph `src` (STAGE_PROPS),
    which the runtime checks against the manifest (copied with them). Done here once for every
    handler: the tools behind them (ONNX Runtime's quantizers, ModelOpt) build new models that keep
    or drop metadata_props as they happen to. A source exported before the props has none to give."""
    props = {p.key: p.value for p in g.load(src, weights=False).metadata_props if p.key in STAGE_PROPS}
    if props:
        add_props(dst, props)


def _copy_stage(src: Path, dst: Path, file: str) -> None:
    shutil.copy2(src / file, dst / file)
    data = src / (file + ".data")
    if data.is_file():
        shutil.copy2(data, dst / data.name)


def _copy_text(src: Path, dst: Path, text: TextEntry) -> None:
    """The embedding table and the tokenizer are not quantized: the table is memory-mapped and only
    the rows a prompt uses are read."""
    shutil.copy2(src / text.embed_file, dst / text.embed_file)
    shutil.copytree(src / text.tokenizer, dst / text.tokenizer)
