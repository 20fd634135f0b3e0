"""Every option is checked where it is parsed: one error line naming the option, the value and what is
allowed, one hint line, exit status 2, no traceback and nothing written.

The numeric options are found by walking the parser itself, so an option added later is fuzzed here
too (or fails `test_every_numeric_option_has_a_range_validator` until it gets a validator).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vinci_edge
from vinci_edge import cli_options as opt
from vinci_edge.cli import build_parser, run


# ---- walking the parser -----------------------------------------------------------------------------
def _subcommands() -> dict[str, argparse.ArgumentParser]:
    subs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subs.choices)


def _is_numeric(action: argparse.Action) -> bool:
    return isinstance(action.type, opt.IntRange | opt.IntChoice | opt.FloatRange) or action.type in (
        int,
        float,
    )


def _numeric_options() -> list[tuple[str, argparse.Action]]:
    return [
        (name, action)
        for name, sub in _subcommands().items()
        for action in sub._actions
        if action.option_strings and _is_numeric(action)
    ]


NUMERIC = _numeric_options()


# Required options whose value is checked to exist where it is parsed (`vinci-edge live --source`),
# and those with a format of their own (`vinci-edge serve-client --server HOST:PORT`).
MUST_EXIST = {"source"}
FORMATTED = {"server": "127.0.0.1:8001", "camera": "cam-1"}


def _required_args(command: str, folder: Path) -> list[str]:
    """Values for the required options of `command`: a choice, or a path inside `folder` that does
    not exist (so a command that ran anyway would fail, not write)."""
    argv = []
    sub = _subcommands()[command]
    for action in sub._actions:
        if action.required and action.option_strings:
            value = action.choices[0] if action.choices else FORMATTED.get(action.dest, folder / action.dest)
            if action.dest in MUST_EXIST:  # an empty file beside `folder`: it parses, nothing plays it
                value = folder.parent / f"{folder.name}-inputs" / action.dest
                value.parent.mkdir(parents=True, exist_ok=True)
                value.touch()
            if action.dest == "split":  # a task split's marker, no clips: it parses, nothing is asked
                value = folder.parent / f"{folder.name}-inputs" / "split"
                value.mkdir(parents=True, exist_ok=True)
                (value / "split.json").write_text('{"generator_version": 1}')
            argv += [action.option_strings[-1], str(value)]
    for group in sub._mutually_exclusive_groups:  # one of them required: --prompt / --prompt-file
        if group.required:
            argv += [group._group_actions[0].option_strings[-1], "x"]
    return argv


def _out_of_range(action: argparse.Action) -> list[str]:
    """Values outside what the option declares it accepts: 0, negatives, above the maximum, and for
    numbers also nan and infinities; plus one that is no number at all."""
    t, values = action.type, ["x"]
    if isinstance(t, opt.IntChoice):
        return values + [str(v) for v in (0, -1, max(t.values) + 1) if v not in t.values]
    if isinstance(t, opt.FloatRange):
        values += ["nan", "inf", "-inf"]
        candidates = [0.0, -1.0, -5.0, t.minimum - 0.5]
        candidates += [] if t.maximum is None else [t.maximum + 1, t.maximum * 10 + 1]
        below = [v for v in candidates if v < t.minimum or (t.open_minimum and v == t.minimum)]
        above = [v for v in candidates if t.maximum is not None and v > t.maximum]
        return values + [f"{v:g}" for v in below + above]
    candidates = [0, -1, -5, t.minimum - 1]
    candidates += [] if t.maximum is None else [t.maximum + 1, 10 * t.maximum]
    values += ["2.5"]
    return values + [str(v) for v in candidates if v < t.minimum or (t.maximum is not None and v > t.maximum)]


def _refusal(capsys) -> tuple[str, list[str]]:
    captured = capsys.readouterr()
    return captured.out, captured.err.splitlines()


def test_the_walk_finds_the_numeric_options_of_every_subcommand():
    found = {(name, action.option_strings[-1]) for name, action in NUMERIC}
    for pair in [
        ("init-checkpoint", "--seed"),
        ("generate", "--num-frames"),
        ("export", "--max-context"),
        ("run", "--top-p"),
        ("run", "--context"),
        ("quantize", "--calib-size"),
        ("quantize", "--smoothquant"),
        ("quant-report", "--tokens"),
        ("quant-report", "--text-offset"),
        ("profile", "--runs"),
        ("profile", "--warmup"),
        ("build-engines", "--opt-level"),
        ("build-engines", "--workspace"),
        ("doctor", "--atol"),
    ]:
        assert pair in found
    assert {name for name, _ in NUMERIC} == set(_subcommands())


def test_every_numeric_option_has_a_range_validator():
    bare = [(name, action.option_strings[-1]) for name, action in NUMERIC if action.type in (int, float)]
    assert bare == [], "give these a cli_options validator (IntRange, IntChoice or FloatRange)"


@pytest.mark.parametrize(
    ("command", "action"), NUMERIC, ids=[f"{n}{a.option_strings[-1]}" for n, a in NUMERIC]
)
def test_out_of_range_numbers_are_one_line_at_parse_time(command, action, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # profile writes to ./profile by default
    option = action.option_strings[-1]
    for value in _out_of_range(action):
        assert run([command, *_required_args(command, tmp_path), f"{option}={value}"]) == 2, value
        out, err = _refusal(capsys)
        assert out == "" and len(err) == 2, (value, err)
        assert err[0].startswith(f"vinci-edge {command}: error: argument {option}: "), err
        assert f"{value} is not " in err[0] or f"{value!r} is not " in err[0], err
        assert err[1] == f"vinci-edge: hint: see 'vinci-edge {command} --help'"
        assert "Traceback" not in "\n".join(err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "action"), NUMERIC, ids=[f"{n}{a.option_strings[-1]}" for n, a in NUMERIC]
)
def test_the_ends_of_each_range_are_accepted(command, action, tmp_path):
    """The validators refuse only what is outside the range (the bounds themselves parse)."""
    t, option = action.type, action.option_strings[-1]
    if isinstance(t, opt.IntChoice):
        ends = list(t.values)
    elif isinstance(t, opt.FloatRange) and t.open_minimum:
        ends = [t.maximum if t.maximum is not None else math.nextafter(t.minimum, math.inf)]
    elif isinstance(t, opt.FloatRange):
        ends = [t.minimum]
    else:
        ends = [t.minimum] if t.maximum is None else [t.minimum, t.maximum]
    for value in ends:
        args = build_parser().parse_args([command, *_required_args(command, tmp_path), f"{option}={value}"])
        assert getattr(args, action.dest) == value


# ---- the cases that used to crash or be ignored -----------------------------------------------------
@pytest.mark.parametrize("command", ["run", "generate"])
@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("--max-new-tokens", "0", "an integer >= 1"),
        ("--max-new-tokens", "-5", "an integer >= 1"),
        ("--temperature", "-1", "a number >= 0"),
        ("--top-p", "2", "in (0, 1]"),
        ("--top-p", "0", "in (0, 1]"),
        ("--top-k", "-3", "an integer >= 0"),
        ("--num-frames", "-2", f"an integer in [1, {opt.MAX_FRAMES}]"),
        ("--num-frames", "0", f"an integer in [1, {opt.MAX_FRAMES}]"),
    ],
)
def test_reported_values_are_refused_by_name(command, option, value, allowed, tmp_path, capsys):
    argv = [command, *_required_args(command, tmp_path), option, value]
    assert run(argv) == 2
    out, err = _refusal(capsys)
    assert err == [
        f"vinci-edge {command}: error: argument {option}: {value} is not {allowed}",
        f"vinci-edge: hint: see 'vinci-edge {command} --help'",
    ]


@pytest.mark.parametrize(("option", "value"), [("--threads", "-2"), ("--context", "0"), ("--context", "1")])
def test_runtime_sizes_are_refused_rather_than_meaning_the_default(option, value, tmp_path, capsys):
    assert run(["run", "--engine", str(tmp_path / "e"), "--prompt", "x", option, value]) == 2
    assert f"argument {option}: {value} is not" in capsys.readouterr().err


def test_left_out_sizes_are_none_and_mean_the_default(tmp_path):
    args = build_parser().parse_args(["run", "--engine", str(tmp_path), "--prompt", "x"])
    assert args.num_frames is None and args.context is None and args.stage_provider is None
    assert args.provider == "cpu" and args.threads == 0


# ---- providers and stages ---------------------------------------------------------------------------
def _engine_argv(command: str, tmp_path: Path) -> list[str]:
    return [command, *_required_args(command, tmp_path)]


@pytest.mark.parametrize("command", ["run", "profile"])
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--stage-provider", "vison=cuda"], "argument --stage-provider: 'vison' is not a stage (vision, "),
        (["--stage-provider", "vision"], "argument --stage-provider: 'vision' is not STAGE=PROVIDER"),
        (["--stage-provider", "vision=gpu"], "argument --stage-provider: 'gpu' is not a provider (cpu, "),
        (["--stage-provider", "audio=cpu", "--stage-provider", "audio=cuda"], "stage audio is given twice"),
        (["--provider", "gpu"], "argument --provider: 'gpu' is not a provider (cpu, cuda, tensorrt"),
        (["--provider", "ExecutionProvider"], "argument --provider: 'ExecutionProvider' is not a provider"),
    ],
)
def test_unknown_stages_and_providers_are_refused(command, argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run([*_engine_argv(command, tmp_path), *argv]) == 2
    out, err = _refusal(capsys)
    assert len(err) == 2 and err[0].startswith(f"vinci-edge {command}: error: ") and message in err[0]
    assert "install" not in err[1]  # a typo is not a missing package
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["run", "profile"])
def test_known_providers_parse_into_one_dict(command, tmp_path):
    argv = ["--provider", "CUDA", "--stage-provider", "audio=cpu"]
    argv += ["--stage-provider", " vision = TensorrtExecutionProvider"]
    args = build_parser().parse_args([*_engine_argv(command, tmp_path), *argv])
    assert args.provider == "cuda"
    assert args.stage_provider == {"audio": "cpu", "vision": "TensorrtExecutionProvider"}


def test_the_provider_names_are_the_runtime_s():
    from vinci_edge.runtime.backend import PROVIDER_ALIASES

    assert set(opt.PROVIDER_NAMES) == set(PROVIDER_ALIASES)


def test_profile_compare_checks_the_provider_after_the_at(tmp_path, capsys):
    argv = [*_engine_argv("profile", tmp_path), "--compare", "a", "b@trt"]
    assert build_parser().parse_args(argv).compare == [("a", None), ("b", "trt")]
    assert run([*argv, "c@gpu"]) == 2
    assert "argument --compare: 'gpu' is not a provider" in capsys.readouterr().err


def test_export_stages_are_checked_at_parse_time(tmp_path, capsys):
    argv = _engine_argv("export", tmp_path)
    assert build_parser().parse_args([*argv, "--stages", "vision, decoder"]).stages == ["vision", "decoder"]
    for stages, bad in [("vision,vison", "'vison'"), ("", "''"), ("audio,", "''")]:
        assert run([*argv, "--stages", stages]) == 2
        out, err = _refusal(capsys)
        assert err[0] == f"vinci-edge export: error: argument --stages: {bad} is not a stage " + (
            "(vision, image_projector, audio, decoder)"
        )


# ---- argparse's own errors have the same shape ------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "prog", "message"),
    [
        (["run", "--engine", "e", "--prompt", "x", "--bogus"], "vinci-edge run", "unrecognized arguments"),
        (["run", "--engine", "e"], "vinci-edge run", "one of the arguments --prompt --prompt-file is"),
        (["export", "--checkpoint", "c", "--out", "o", "--dtype", "int3"], "vinci-edge export",
         "argument --dtype: invalid choice: 'int3'"),
        (["quantize", "--engine", "e", "--out", "o", "--precision", "int4", "--target", "mars"],
         "vinci-edge quantize", "argument --target: invalid choice: 'mars'"),
        (["profile", "--engine", "e", "--runs"], "vinci-edge profile", "argument --runs: expected one"),
        (["run", "--engine", "e", "--prompt", "x", "--backend", "cuda"], "vinci-edge run",
         "argument --backend: invalid choice: 'cuda'"),
        (["build-engines", "--engine", "e", "--precision", "int8"], "vinci-edge build-engines",
         "argument --precision: invalid choice: 'int8'"),
        (["build-engines", "--engine", "e", "--profile", "frames=1:2"], "vinci-edge build-engines",
         "argument --profile: 'frames=1:2' is not AXIS=MIN:OPT:MAX"),
        (["doctor", "--require", "cpu"], "vinci-edge doctor", "argument --require: invalid choice: 'cpu'"),
        (["run", "--engine", "e", "--prompt", "x", "--decoder", "trt"], "vinci-edge run",
         "argument --decoder: invalid choice: 'trt'"),
        (["rn"], "vinci-edge", "argument COMMAND: invalid choice: 'rn'"),
        ([], "vinci-edge", "the following arguments are required: COMMAND"),
    ],
)  # fmt: skip
def test_argparse_errors_are_one_error_and_one_hint(argv, prog, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run(argv) == 2
    out, err = _refusal(capsys)
    assert out == "" and len(err) == 2
    assert err[0].startswith(f"{prog}: error: ") and message in err[0]
    assert err[1] == f"vinci-edge: hint: see '{prog} --help'"
    assert list(tmp_path.iterdir()) == []


def test_help_still_prints_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exc:
        run(["run", "--help"])
    assert exc.value.code == 0 and "--stage-provider" in capsys.readouterr().out


def test_the_installed_command_prints_what_run_prints(tmp_path, capsys):
    """`python -m vinci_edge.cli` (what the console script calls) gives the same two lines and status."""
    argv = ["run", "--engine", str(tmp_path / "e"), "--prompt", "x", "--top-p", "2"]
    assert run(argv) == 2
    in_process = capsys.readouterr().err
    root = str(Path(vinci_edge.__file__).resolve().parents[1])  # the code imported here, not another copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "vinci_edge.cli", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert (
        proc.stderr
        == in_process
        == (
            "vinci-edge run: error: argument --top-p: 2 is not in (0, 1]\n"
            "vinci-edge: hint: see 'vinci-edge run --help'\n"
        )
    )
    assert list(tmp_path.iterdir()) == []


# ---- --num-frames reaches the request in both answer paths --------------------------------------------
def test_generate_and_run_sample_the_frames_asked_for(tiny_ckpt, tiny_engine, clip, capsys):
    pytest.importorskip("torch")
    frames = {}
    for command, source in [
        ("generate", ["--checkpoint", str(tiny_ckpt)]),
        ("run", ["--engine", str(tiny_engine)]),
    ]:
        argv = [command, *source, "--video", str(clip), "--prompt", "What?", "--max-new-tokens", "1"]
        assert run([*argv, "--num-frames", "2", "--json"]) == 0
        frames[command] = json.loads(capsys.readouterr().out)["media"][0]["frames"]
    assert frames == {"generate": 2, "run": 2}
