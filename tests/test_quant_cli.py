"""`vinci-edge quantize` on the command line: quantize then run, the help, a refusal."""

from __future__ import annotations

import json

import pytest
from quant_helpers import PROMPT, _manifest


def test_cli_quantize_then_run(tiny_engine, media, text, tmp_path, capsys):
    from vinci_edge.cli import run

    out = tmp_path / "q"
    argv = [
        "quantize",
        "--engine",
        str(tiny_engine),
        "--out",
        str(out),
        "--precision",
        "decoder=int8-dynamic",
    ]
    argv += ["--smoothquant", "0.5", "--calib-video", str(media), "--calib-text", str(text)]
    assert run([*argv, "--calib-size", "2", "--seed", "3", "--json"]) == 0
    cap = capsys.readouterr()
    record = json.loads(cap.out)
    assert record["engine"] == str(out)
    assert record["precision"]["decoder"]["precision"] == "int8-dynamic"
    assert record["precision"]["decoder"]["calibration"]["seed"] == 3
    assert record["precision"]["vision"] == _manifest(out)["precision"]["vision"]
    assert record["precision"]["vision"]["precision"] == "fp32"
    for line in (
        "calibration request 2/2",
        "decoder: SmoothQuant (alpha 0.5)",
        "decoder: int8-dynamic written",
    ):
        assert f"[vinci-edge] quantize: {line}" in cap.err
    rc = run(
        ["run", "--engine", str(out), "--video", str(media), "--prompt", PROMPT, "--max-new-tokens", "3"]
    )
    assert rc == 0
    # the same argv again: --out exists now
    assert run([*argv, "--calib-size", "2"]) == 2
    err = capsys.readouterr().err
    assert f"vinci-edge: error: {out} already exists" in err and "vinci-edge: hint:" in err


def test_cli_help_explains_precisions_and_stage_syntax(capsys):
    from vinci_edge.cli import run

    with pytest.raises(SystemExit) as exc:
        run(["quantize", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("int8-dynamic", "int4", "int8", "fp8", "int4-awq", "vision=int8,audio=int8,decoder=int4"):
        assert word in text
    for option in ("--target", "--calib-video", "--calib-audio", "--calib-text", "--calib-size", "--seed"):
        assert option in text
    assert "--smoothquant" in text and "--force" in text


def test_cli_refusal_is_a_message_and_a_hint(tiny_engine, tmp_path, capsys):
    from vinci_edge.cli import run

    out = tmp_path / "fp8"
    assert (
        run(
            [
                "quantize",
                "--engine",
                str(tiny_engine),
                "--out",
                str(out),
                "--precision",
                "fp8",
                "--target",
                "orin",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "vinci-edge: error: --target orin" in err and "FP8 needs an Ada, Hopper or Thor GPU" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
