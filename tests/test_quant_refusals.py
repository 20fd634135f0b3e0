"""Every bad input to `vinci-edge quantize` is refused with a message and a hint, before anything
is written; a failure midway leaves nothing behind and keeps the engine --force would replace.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from quant_helpers import _manifest

from vinci_edge.errors import ConfigError, EngineError, MediaError


def _refuse(tmp_path: Path, engine: Path, error: type, match: str, precision: str = "int8", **kwargs):
    """quantize_engine must raise `error` and leave no trace in tmp_path (no out, no .partial)."""
    from vinci_edge.quantization.quantize import quantize_engine

    before = sorted(tmp_path.rglob("*"))
    out = kwargs.pop("out", tmp_path / "out")
    with pytest.raises(error, match=match) as exc:
        quantize_engine(engine, out, precision, **kwargs)
    assert exc.value.hint, "every refusal says what to do"
    assert sorted(tmp_path.rglob("*")) == before
    return exc.value


def test_refuses_an_empty_calibration_set(tiny_engine, media, text, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    _refuse(tmp_path, tiny_engine, MediaError, "holds 0 words", calib_videos=[media], calib_texts=[empty])
    _refuse(tmp_path, tiny_engine, ConfigError, "has no text", calib_videos=[media], calib_texts=[])
    _refuse(
        tmp_path,
        tiny_engine,
        ConfigError,
        "would be empty",
        calib_videos=[media],
        calib_texts=[text],
        calib_size=0,
    )
    # vision needs frames: no clip at all cannot calibrate it
    _refuse(
        tmp_path, tiny_engine, ConfigError, "no video for the vision", calib_videos=[], calib_texts=[text]
    )


def test_refuses_an_unreadable_calibration_set(tiny_engine, media, text, wav, tmp_path):
    binary = tmp_path / "binary.txt"
    binary.write_bytes(bytes(range(256)) * 8)
    _refuse(
        tmp_path,
        tiny_engine,
        MediaError,
        "cannot be read as UTF-8",
        calib_videos=[media],
        calib_texts=[binary],
    )
    _refuse(tmp_path, tiny_engine, MediaError, "is not a file", calib_videos=[media], calib_texts=[tmp_path])
    _refuse(
        tmp_path,
        tiny_engine,
        MediaError,
        "missing.mp4",
        calib_videos=[tmp_path / "missing.mp4"],
        calib_texts=[text],
    )
    _refuse(tmp_path, tiny_engine, MediaError, "not a media file", calib_videos=[binary], calib_texts=[text])
    _refuse(
        tmp_path, tiny_engine, MediaError, "holds no video stream", calib_videos=[wav], calib_texts=[text]
    )


def test_refuses_audio_calibration_without_sound(tiny_engine, text, tmp_path):
    from vinci_edge.media.synth import make_test_clip

    silent = make_test_clip(tmp_path / "silent.mp4", seconds=2.0, audio=False)
    _refuse(
        tmp_path,
        tiny_engine,
        ConfigError,
        "no sound for the audio stage",
        "audio=int8",
        calib_videos=[silent],
        calib_texts=[text],
    )


def test_refuses_fp8_for_orin_and_unknown_targets(tiny_engine, tmp_path):
    err = _refuse(tmp_path, tiny_engine, ConfigError, "orin .* cannot run .*fp8", "fp8", target="orin")
    assert "Ada, Hopper or Thor" in err.hint
    _refuse(tmp_path, tiny_engine, ConfigError, "cannot run .*decoder=int8", "decoder=int8", target="cpu")
    _refuse(tmp_path, tiny_engine, ConfigError, "unknown --target 'xavier'", "int4", target="xavier")


@pytest.mark.parametrize(
    "precision,match",
    [
        ("int3", "unknown precision 'int3'"),
        ("", "--precision is empty"),
        ("eyes=int8", "unknown stage 'eyes'"),
        ("vision=int8,int4", "not STAGE=PRECISION"),
        ("decoder=fp16", "unknown precision 'fp16'"),
        ("decoder=fp32", "nothing to quantize"),
    ],
)
def test_refuses_unknown_precisions_and_stages(tiny_engine, tmp_path, precision, match):
    _refuse(tmp_path, tiny_engine, ConfigError, match, precision)


def test_refuses_bad_keep_fp32(tiny_engine, tmp_path):
    _refuse(tmp_path, tiny_engine, ConfigError, "unknown decoder layers mlp", "int8", keep_fp32=["mlp"])
    _refuse(tmp_path, tiny_engine, ConfigError, "takes no layer names", "int8", keep_fp32=["auto", "qkv"])
    _refuse(
        tmp_path,
        tiny_engine,
        ConfigError,
        "applies to the decoder at int8 or fp8",
        "int4",
        keep_fp32=["down_proj"],
    )


def test_refuses_bad_head_bits(tiny_engine, tmp_path):
    _refuse(tmp_path, tiny_engine, ConfigError, "applies to the decoder at int4", "int8-dynamic", head_bits=4)
    _refuse(tmp_path, tiny_engine, ConfigError, "8 or 4 bits", "int4", head_bits=2)


def test_refuses_bad_smoothquant(tiny_engine, tmp_path):
    _refuse(tmp_path, tiny_engine, ConfigError, "applies to the decoder at int8", "int4", smoothquant=0.5)
    _refuse(tmp_path, tiny_engine, ConfigError, r"outside \[0, 1\]", "int8", smoothquant=1.5)


def test_refuses_to_quantize_a_quantized_engine(quantized, tiny_engine, tmp_path):
    _refuse(tmp_path, quantized("int8-dynamic"), EngineError, "already a quantized engine", "int4")
    _refuse(tmp_path, tiny_engine, EngineError, "--out is the input engine", "int4", out=tiny_engine)


def test_out_exists_needs_force_and_force_replaces_only_engines(quantized, tiny_engine, tmp_path):
    from vinci_edge.quantization.quantize import quantize_engine

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _refuse(tmp_path, tiny_engine, EngineError, "already exists", "int4", out=out)
    _refuse(tmp_path, tiny_engine, EngineError, "not an engine folder", "int4", out=out, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    quantize_engine(tiny_engine, out, "int4", force=True)  # an empty folder may be replaced
    quantize_engine(tiny_engine, out, "int8-dynamic", force=True)  # and an engine folder
    assert _manifest(out)["quantization"]["precisions"]["decoder"] == "int8-dynamic"


def test_a_failure_midway_leaves_nothing_and_keeps_the_old_engine(quantized, tiny_engine, tmp_path):
    """The towers are written into the .partial folder, then the decoder fails: no .partial, no new
    engine and no folder made for it remain, and the engine --force would have replaced is
    untouched."""
    import shutil

    from vinci_edge.quantization.int4 import Int4
    from vinci_edge.quantization.quantize import quantize_engine

    class FailsOnTheDecoder(Int4):
        def run(self, job):
            if job.stage == "decoder":
                assert job.dst.parent.name == ".out.partial" and any(job.dst.parent.glob("vision.onnx"))
                raise OSError("No space left on device")
            return super().run(job)

    said: list[str] = []
    kwargs = {"progress": said.append, "handlers": {"int4": FailsOnTheDecoder()}}
    with pytest.raises(OSError, match="No space left"):  # into a folder this run creates
        quantize_engine(tiny_engine, tmp_path / "engines" / "out", "int4", **kwargs)
    assert "vision: int4 written" in " ".join(said)
    assert list(tmp_path.iterdir()) == []

    old = tmp_path / "out"
    shutil.copytree(quantized("int8-dynamic"), old)
    files = {p.name: p.read_bytes() for p in old.iterdir() if p.is_file()}
    with pytest.raises(OSError, match="No space left"):
        quantize_engine(tiny_engine, old, "int4", force=True, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert {p.name: p.read_bytes() for p in old.iterdir() if p.is_file()} == files
