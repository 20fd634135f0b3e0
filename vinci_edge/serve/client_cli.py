"""`vinci-edge serve-client`: stream a camera, a microphone or a file to a server, print its answers.

    vinci-edge serve-client --server gpu-host:8001 --camera dock-3 --source /dev/video0 --every 10
    vinci-edge serve-client --server 127.0.0.1:8001 --camera test --source clip.mp4 --ask "What happens?"

The server is `vinci-edge serve` or a `tritonserver` on a repository from `vinci-edge serve
--export-repo`. Questions come from --every (periodic, in stream time) and --ask (once the source
has been sent and the server has it in its cache). Answers stream to stdout as the live command
prints them (--json: every event as one JSON line); notices (the server lost, reconnected) go to
stderr. A file ends the command once it is sent and every question is answered; a camera runs until
Ctrl-C or --duration. A server that is not there is tried again with a back-off, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from vinci_edge import cli_options as opt
from vinci_edge.live.cli import source_spec
from vinci_edge.progress import to_stderr_as

_say = to_stderr_as("serve-client")


def server_address(text: str) -> str:
    """`type=` for --server: HOST:PORT (a grpc:// prefix is accepted)."""
    from vinci_edge.serve.client_transport import grpc_url

    address = grpc_url(text)
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"--server takes HOST:PORT (the gRPC port, e.g. 8001), got {text!r}")
    return address


def camera_id(text: str) -> str:
    if not text.strip() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"a camera id is one word, got {text!r}")
    return text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve-client",
        help="stream a camera / microphone / file to a vinci-edge server and print its answers",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--server", required=True, type=server_address, help="the server's gRPC HOST:PORT")
    p.add_argument("--camera", required=True, type=camera_id, help="this stream's id on the server")
    p.add_argument(
        "--source",
        required=True,
        type=source_spec,
        help="a media file (played as live), rtsp:// or http:// URL, /dev/videoN, camera:N or gst:PIPELINE",
    )
    p.add_argument(
        "--mic",
        nargs="?",
        const="mic",
        default=None,
        metavar="DEVICE",
        help="also send a microphone (the default one, or a device name) (default: the source's own audio)",
    )
    p.add_argument(
        "--fast", action="store_true", help="send a file as fast as the server takes it (default: real time)"
    )
    p.add_argument(
        "--fps", type=opt.positive_float, default=1.0, help="frames sent per second of stream (default 1)"
    )
    p.add_argument("--max-new-tokens", type=opt.positive_int, default=64, help="answer length (default 64)")
    p.add_argument(
        "--every",
        type=opt.positive_float,
        default=None,
        help="ask --question every N seconds of stream (default: no periodic question)",
    )
    p.add_argument(
        "--question",
        type=opt.prompt_text,
        default="What is happening right now?",
        help="the periodic question (default: 'What is happening right now?')",
    )
    p.add_argument(
        "--ask",
        action="append",
        type=opt.prompt_text,
        default=[],
        help="a question asked once the source is sent and in the server's cache, repeatable (default: none)",
    )
    p.add_argument(
        "--duration",
        type=opt.positive_float,
        default=None,
        help="stop after N seconds of stream (default: when the source ends, or Ctrl-C)",
    )
    p.add_argument("--json", action="store_true", help="print every event as one JSON line on stdout")
    p.set_defaults(func=cmd_serve_client)


def cmd_serve_client(args: argparse.Namespace) -> int:
    from vinci_edge.generation import GenerationConfig
    from vinci_edge.live.cli import _Printer
    from vinci_edge.live.sources import open_source
    from vinci_edge.serve.client import RemoteOptions, RemoteSession

    sources = [open_source(args.source, realtime=not args.fast)]
    if args.mic is not None:
        sources.append(open_source(args.mic if args.mic.startswith("mic") else f"mic:{args.mic}"))
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens)
    session = RemoteSession(
        args.server, args.camera, RemoteOptions(fps=args.fps, max_new_tokens=args.max_new_tokens)
    )
    session.subscribe(_Printer(args.json))
    periodic = _periodic(args, session, gen)
    _say(f"streaming {', '.join(s.name for s in sources)} to {args.server} as camera {args.camera!r}")
    session.start(sources)
    try:
        _run(args, session, gen)
    finally:
        if periodic is not None:
            periodic.stop()
        session.stop()
        _say(_summary(session.stats()))
    return 0


def _periodic(args: argparse.Namespace, session: Any, gen: Any) -> Any:
    if args.every is None:
        return None
    from vinci_edge.live.triggers import PeriodicTrigger

    return PeriodicTrigger(session, args.every, args.question, gen=gen)


def _run(args: argparse.Namespace, session: Any, gen: Any) -> None:
    """Until the source is sent and in the server's cache, --duration passes, or Ctrl-C; then the
    --ask questions (a refusal is printed as an event, not raised)."""
    from vinci_edge.live.answers import QuestionRefused

    while not session.join(timeout=0.2):
        now = session.media_until if args.fast else session.clock.now()
        if args.duration is not None and now >= args.duration:
            break
    for question in args.ask:
        with contextlib.suppress(QuestionRefused):
            session.ask(question, gen=gen, origin="cli", until=session.sent_until)


def _summary(stats: dict[str, Any]) -> str:
    keys = ("frames_sent", "audio_blocks_sent", "frames_dropped", "answers", "refused", "reconnects")
    return "stopped: " + ", ".join(f"{k.replace('_', ' ')} {stats[k]}" for k in keys)
