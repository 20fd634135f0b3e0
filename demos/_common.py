"""What the demos share: the options for an engine and a live source, the session, the run loop and
the one-line errors. Each demo is one file on top of this one (run it as `python demos/NAME.py`).

stdout carries the demo's output as JSON lines only; everything for the person watching (progress,
source notices, the refusal of a bad option) goes to stderr.

`--server HOST:PORT` runs the same demo against `vinci-edge serve` (or a Triton server on an
exported repository) instead of a local engine: the source is read here and streamed to the server
as camera `--camera`, the questions are answered there (vinci_edge.serve.client.RemoteSession).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from vinci_edge import cli_options as opt
from vinci_edge.errors import VinciEdgeError


def parser(prog: str, description: str) -> opt.CommandLineParser:
    """A parser with the options every demo takes: the engine, the source, how to play it."""
    p = opt.CommandLineParser(prog=prog, description=description)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--engine", type=Path, help="an engine folder (vinci-edge export)")
    where.add_argument(
        "--server",
        type=_server_address,
        metavar="HOST:PORT",
        help="answer on a vinci-edge server (its gRPC address) instead of a local --engine",
    )
    p.add_argument(
        "--camera",
        default=None,
        help="with --server: this stream's id on the server (default: the demo, host and process id)",
    )
    p.add_argument(
        "--source",
        required=True,
        help="a media file (played as live), a camera (/dev/video0, camera:0), a stream URL (rtsp://...)",
    )
    p.add_argument(
        "--mic",
        nargs="?",
        const="mic",
        default=None,
        metavar="DEVICE",
        help="also listen to a microphone (the default one, or mic:NAME) (default: the source's own audio)",
    )
    p.add_argument(
        "--fast", action="store_true", help="play a file as fast as the runtime takes it (default: real time)"
    )
    p.add_argument(
        "--duration",
        type=opt.positive_float,
        default=None,
        help="stop after this many seconds of stream (default: when the source ends, or Ctrl-C)",
    )
    p.add_argument(
        "--fps", type=opt.positive_float, default=1.0, help="frames sampled per second (default 1)"
    )
    p.add_argument(
        "--chunk-seconds",
        type=opt.positive_float,
        default=2.0,
        help="seconds of media per segment (default 2)",
    )
    p.add_argument("--max-new-tokens", type=opt.positive_int, default=48, help="answer length (default 48)")
    p.add_argument(
        "--threads", type=opt.thread_count, default=0, help="CPU threads per stage (default 0: all)"
    )
    opt.add_provider_options(p)
    return p


def run_main(
    prog: str, main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None
) -> int:
    """`main(argv)` with every refusal (a bad option, a missing engine or source) as one error line
    and a hint line on stderr and status 2, never a traceback; Ctrl-C is status 130."""
    try:
        return main(argv)
    except opt.UsageError as exc:
        return refuse(exc.prog, exc)
    except VinciEdgeError as exc:
        return refuse(prog, exc)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130


def refuse(prog: str, exc: VinciEdgeError) -> int:
    print(f"{prog}: error: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"{prog}: hint: {exc.hint}", file=sys.stderr)
    return 2


def say(prog: str, text: str) -> None:
    """A line for the person watching, on stderr."""
    print(f"{prog}: {text}", file=sys.stderr, flush=True)


def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout."""
    print(json.dumps(record, ensure_ascii=False, default=str), flush=True)


def generation(args: argparse.Namespace) -> Any:
    from vinci_edge.generation import GenerationConfig

    return GenerationConfig(max_new_tokens=args.max_new_tokens)


def open_sources(args: argparse.Namespace) -> list[Any]:
    """The --source (and --mic) as live sources: opening probes them, so a missing file or camera is
    refused here, before the engine loads."""
    from vinci_edge.live.sources import open_source

    sources = [open_source(args.source, realtime=not args.fast)]
    if args.mic is not None:
        sources.append(open_source(args.mic if args.mic.startswith("mic") else f"mic:{args.mic}"))
    return sources


def open_session(args: argparse.Namespace, prog: str) -> Any:
    """The engine loaded into a live session, not started yet (with --server: a session on the
    server, which has the same surface)."""
    if args.server is not None:
        return _remote_session(args, prog)
    from vinci_edge.live.session import LiveOptions, LiveSession
    from vinci_edge.runtime.pipeline import Pipeline

    say(prog, f"loading the engine {args.engine}")
    pipe = Pipeline.from_engine(
        args.engine, provider=args.provider, stage_providers=args.stage_provider, threads=args.threads
    )
    options = LiveOptions(fps=args.fps, chunk_seconds=args.chunk_seconds, max_new_tokens=args.max_new_tokens)
    session = LiveSession(pipe, options)
    session.subscribe(lambda event: _notice(prog, event))
    return session


def _remote_session(args: argparse.Namespace, prog: str) -> Any:
    import socket

    from vinci_edge.serve.client import RemoteOptions, RemoteSession

    camera = args.camera or f"{Path(prog).stem}-{socket.gethostname()}-{os.getpid()}"
    say(prog, f"answering on the server {args.server} as camera {camera!r}")
    session = RemoteSession(
        args.server, camera, RemoteOptions(fps=args.fps, max_new_tokens=args.max_new_tokens)
    )
    session.subscribe(lambda event: _notice(prog, event))
    return session


def _server_address(text: str) -> str:
    from vinci_edge.serve.client_cli import server_address

    return server_address(text)


def play(session: Any, sources: list[Any], duration: float | None) -> None:
    """Start the sources and wait until they end (and their media is in the cache), `duration`
    seconds of stream pass (of media taken in, for a file played fast), or Ctrl-C / SIGTERM - which
    end the wait, not the program, so the demo still finishes its questions and its summary."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        session.start(sources)
        realtime = any(s.realtime for s in sources)
        while not stop.is_set() and not session.join(timeout=0.2):
            now = session.clock.now() if realtime else session.media_until
            if duration is not None and now >= duration:
                return
    except KeyboardInterrupt:
        return
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_answered(futures: list[Future], timeout: float = 300.0) -> None:
    """Wait for the questions already asked (a refused one raises: it is counted, not fatal)."""
    deadline = time.monotonic() + timeout
    for future in futures:
        with contextlib.suppress(Exception):
            future.result(timeout=max(0.0, deadline - time.monotonic()))


def _notice(prog: str, event: dict[str, Any]) -> None:
    """Source notices (lost, reconnected, video only) and worker errors, for the person watching."""
    if event.get("type") == "source" and event.get("kind") != "ended":
        say(prog, f"{event['source']}: {event['kind']}: {event['message']}")
    elif event.get("type") == "error":
        say(prog, f"error: {event['message']}")
