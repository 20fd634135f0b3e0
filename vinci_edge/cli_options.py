"""Command-line option checks, done where argparse parses the option.

Every subcommand takes its numbers, providers and stage names through the `type=` validators here,
so a bad value is refused before anything is loaded or written, with one line that names the option,
the value and what is allowed (argparse prefixes the option: `argument --top-p: 2 is not in (0, 1]`).
`CommandLineParser` gives argparse's own errors (unknown option, missing option, bad choice) the same
shape: `UsageError`, which `vinci_edge.cli.run` prints as one error line and one hint line.

Files the command only reads (`--prompt-file`, `--llm-gguf`) are read or found here too, so an empty
or unreadable one is refused the same way.

Only the standard library and bottom modules are imported: the torch-free commands import this too.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from vinci_edge.assets import NAMED_GGUF
from vinci_edge.errors import VinciEdgeError
from vinci_edge.progress import to_stderr
from vinci_edge.stages import STAGE_NAMES

# The short provider names the runtime understands (runtime/backend.py maps them to ONNX Runtime's
# names in PROVIDER_ALIASES; not imported from there because backend.py pulls in numpy, and
# tests/test_cli_options.py checks that the two agree).
PROVIDER_NAMES = ("cpu", "cuda", "tensorrt", "trt")
PROVIDER_SUFFIX = "ExecutionProvider"

# Upper bounds that protect the machine rather than the model: the frame count is decoded before the
# prompt is checked against the context (so 10**6 frames would exhaust memory first), thread counts
# go to ONNX Runtime as a C int, and seeds are kept to the 32 bits every generator accepts.
MAX_FRAMES = 1024
MAX_THREADS = 1024
MAX_SEED = 2**32 - 1


class UsageError(VinciEdgeError):
    """A command line argparse refused; `prog` names the (sub)command, e.g. 'vinci-edge run'."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message, hint=f"see '{prog} --help'")
        self.prog = prog


class CommandLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a `UsageError` instead of a usage dump and exit.

    Subparsers made with `add_subparsers` are of the same class, so every subcommand shares it.
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(" ".join(message.split()), self.prog)

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """As argparse's, but an unrecognized argument is reported against its subcommand."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "command", None)
            prog = f"{self.prog} {command}" if command else self.prog
            raise UsageError(f"unrecognized arguments: {' '.join(extras)}", prog)
        return parsed


# ---- numbers ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IntRange:
    """`type=` for an integer in [minimum, maximum] (maximum None: no upper bound)."""

    minimum: int
    maximum: int | None = None

    @property
    def allowed(self) -> str:
        if self.maximum is None:
            return f"an integer >= {self.minimum}"
        return f"an integer in [{self.minimum}, {self.maximum}]"

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.allowed}") from None
        if value < self.minimum or (self.maximum is not None and value > self.maximum):
            raise argparse.ArgumentTypeError(f"{text} is not {self.allowed}")
        return value


@dataclass(frozen=True)
class FloatRange:
    """`type=` for a finite number from minimum (excluded if `open_minimum`) to maximum (None: no
    upper bound). nan and inf are refused: no option means anything by them."""

    minimum: float
    maximum: float | None = None
    open_minimum: bool = False

    @property
    def allowed(self) -> str:
        if self.maximum is None:
            return f"a number {'>' if self.open_minimum else '>='} {self.minimum:g}"
        return f"in {'(' if self.open_minimum else '['}{self.minimum:g}, {self.maximum:g}]"

    def contains(self, value: float) -> bool:
        above = value > self.minimum if self.open_minimum else value >= self.minimum
        return math.isfinite(value) and above and (self.maximum is None or value <= self.maximum)

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.allowed}") from None
        if not self.contains(value):
            raise argparse.ArgumentTypeError(f"{text} is not {self.allowed}")
        return value


@dataclass(frozen=True)
class IntChoice:
    """`type=` for an integer from a short list (e.g. quantize --head-bits 8 or 4)."""

    values: tuple[int, ...]

    @property
    def allowed(self) -> str:
        return "one of " + ", ".join(str(v) for v in self.values)

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.allowed}") from None
        if value not in self.values:
            raise argparse.ArgumentTypeError(f"{text} is not {self.allowed}")
        return value


positive_int = IntRange(1)
non_negative_int = IntRange(0)
frame_count = IntRange(1, MAX_FRAMES)
thread_count = IntRange(0, MAX_THREADS)  # 0: one per core
seed = IntRange(0, MAX_SEED)
context_length = IntRange(2)  # the decoder needs a position for the prompt and one for the answer
non_negative_float = FloatRange(0.0)
positive_float = FloatRange(0.0, open_minimum=True)
unit_interval = FloatRange(0.0, 1.0)
probability = FloatRange(0.0, 1.0, open_minimum=True)


# ---- providers and stages ---------------------------------------------------------------------------
def provider(text: str) -> str:
    """`type=` for an execution provider: cpu, cuda, tensorrt / trt (any case), or a full ONNX Runtime
    name such as CUDAExecutionProvider. Whether it is installed is checked when the engine loads."""
    name = text.strip()
    if name.lower() in PROVIDER_NAMES:
        return name.lower()
    if name.endswith(PROVIDER_SUFFIX) and name[: -len(PROVIDER_SUFFIX)].isalnum():
        return name
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a provider (cpu, cuda, tensorrt, trt, or an ONNX Runtime name ending in "
        f"{PROVIDER_SUFFIX})"
    )


def stage_name(text: str) -> str:
    """`type=` for one engine stage name."""
    name = text.strip()
    if name not in STAGE_NAMES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a stage ({', '.join(STAGE_NAMES)})")
    return name


def stage_list(text: str) -> list[str]:
    """`type=` for a comma-separated list of stage names (export --stages)."""
    return [stage_name(item) for item in text.split(",")]


def stage_provider(text: str) -> tuple[str, str]:
    """`type=` for STAGE=PROVIDER: the stage and the provider, each checked as above."""
    stage, sep, name = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not STAGE=PROVIDER (e.g. vision=cuda)")
    return stage_name(stage), provider(name)


def engine_at_provider(text: str) -> tuple[str, str | None]:
    """`type=` for DIR[@PROVIDER] (profile --compare): the folder and its provider, None if not given."""
    folder, sep, name = text.partition("@")
    if not folder:
        raise argparse.ArgumentTypeError(f"{text!r} names no engine folder (DIR or DIR@PROVIDER)")
    return folder, provider(name) if sep else None


class StageProviders(argparse.Action):
    """Collects repeated `--stage-provider STAGE=PROVIDER` into one {stage: provider} dict; a stage
    given twice is refused rather than the last one silently winning."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        stage, name = values
        chosen = dict(getattr(namespace, self.dest) or {})
        if stage in chosen:
            raise argparse.ArgumentError(self, f"stage {stage} is given twice ({chosen[stage]} and {name})")
        chosen[stage] = name
        setattr(namespace, self.dest, chosen)


def add_provider_options(p: argparse.ArgumentParser) -> None:
    """--provider and --stage-provider, the same for every command that runs an engine."""
    p.add_argument(
        "--provider", type=provider, default="cpu", help="cpu (default), cuda or tensorrt, for every stage"
    )
    p.add_argument(
        "--stage-provider",
        type=stage_provider,
        action=StageProviders,
        default=None,
        metavar="STAGE=PROVIDER",
        help="override the provider of one stage, e.g. vision=cuda, repeatable (default: every stage on "
        "--provider)",
    )


# ---- files read where they are parsed ---------------------------------------------------------------
STDIN = "-"


def prompt_text(text: str) -> str:
    """`type=` for --prompt: the question itself, or `-` for the question read from stdin (a long
    prompt does not fit in one argument: the OS caps one at 128 KiB). An empty one is refused."""
    if text == STDIN:
        return _nonempty(_read_stdin(), "stdin")
    return _nonempty(text, "the prompt")


def prompt_file(text: str) -> str:
    """`type=` for --prompt-file: the question read from a UTF-8 text file (`-`: stdin)."""
    if text == STDIN:
        return _nonempty(_read_stdin(), "stdin")
    try:
        data = Path(text).expanduser().read_bytes()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {exc.strerror or exc}") from None
    try:
        return _nonempty(data.decode("utf-8"), text)
    except UnicodeDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{text} is not UTF-8 text (byte {exc.start})") from None


def _read_stdin() -> str:
    """stdin's text; on a terminal, say how to end it first."""
    if sys.stdin is None:
        raise argparse.ArgumentTypeError("there is no stdin to read the prompt from")
    if sys.stdin.isatty():
        to_stderr("reading the prompt from stdin (end it with Ctrl-D)")
    try:
        return sys.stdin.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read the prompt from stdin: {exc}") from None


def _nonempty(text: str, source: str) -> str:
    """The prompt without its trailing newlines (as the shell's "$(cat FILE)" gives it), refused when
    nothing but whitespace is left."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{source} is empty")
    return text.rstrip("\r\n")


def add_prompt_options(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """--prompt TEXT (`-`: stdin) and --prompt-file PATH, both into `args.prompt`. Exactly one of the
    two is required, unless the command has a `default` question."""
    group = p.add_mutually_exclusive_group(required=default is None)
    shown = "required: this or --prompt-file" if default is None else f"default: {default!r}"
    group.add_argument(
        "--prompt",
        type=prompt_text,
        default=default,
        help=f"the question; - reads it from stdin ({shown})",
    )
    group.add_argument(
        "--prompt-file",
        dest="prompt",
        type=prompt_file,
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="read the question from a UTF-8 text file, for one too long for a command line "
        "(default: --prompt)",
    )


def gguf_file(text: str) -> Path:
    """`type=` for init-checkpoint --llm-gguf: a name from `assets.NAMED_GGUF` (the file inside the
    package that ships it) or the path of a GGUF file."""
    named = NAMED_GGUF.get(text.strip().lower())
    if named is not None:
        path = named.locate()
        if path is None:
            raise argparse.ArgumentTypeError(
                f"{text} ({named.description}) is not installed: {named.install}"
            )
        return path
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a GGUF file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is neither a GGUF file nor a known name ({gguf_names()})")
    return path


def gguf_names() -> str:
    """The names --llm-gguf resolves, each with what it is and how to install it."""
    return "; ".join(f"{g.name}: {g.description}, from {g.install}" for g in NAMED_GGUF.values())
