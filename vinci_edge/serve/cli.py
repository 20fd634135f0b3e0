"""`vinci-edge serve`: live sessions for many cameras on Triton Inference Server.

    vinci-edge serve --engine engine/ --max-streams 8 --expire-seconds 30

Clients stream each camera's frames and audio to the `media` model and ask questions through the
decoupled `ask` model (vinci_edge.serve.client, or any Triton client). Health, readiness and the
model APIs are on the HTTP and gRPC ports, Prometheus metrics on the metrics port. It serves until
Ctrl-C or SIGTERM, then shuts down cleanly: new questions are refused ("the server is stopping"),
those already queued are answered, the sessions closed.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import signal
import threading
from pathlib import Path
from typing import Any

from vinci_edge import cli_options as opt
from vinci_edge.progress import to_stderr_as
from vinci_edge.serve import repository_cli

_say = to_stderr_as("serve")
port = opt.IntRange(1, 65535)
stream_count = opt.IntRange(1, 1024)
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


def host_address(text: str) -> str:
    """`type=` for --host: an IPv4 / IPv6 address or a host name."""
    name = text.strip()
    try:
        ipaddress.ip_address(name)
        return name
    except ValueError:
        pass
    if _HOSTNAME.match(name):
        return name
    raise argparse.ArgumentTypeError(f"{text!r} is neither an IP address nor a host name")


def log_file(text: str) -> str:
    """`type=` for --triton-log: a file whose folder exists (Triton appends to it)."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the folder of {text} does not exist")
    return str(path)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve live sessions for many cameras on Triton Inference Server",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--engine", required=True, type=Path, help="engine folder (from export or quantize)")
    p.add_argument(
        "--host",
        type=host_address,
        default="127.0.0.1",
        help="address every endpoint listens on (default 127.0.0.1: this machine only; 0.0.0.0: all)",
    )
    p.add_argument("--http-port", type=port, default=8000, help="HTTP port: health, models (default 8000)")
    p.add_argument("--grpc-port", type=port, default=8001, help="gRPC port: streaming answers (default 8001)")
    p.add_argument("--metrics-port", type=port, default=8002, help="Prometheus metrics port (default 8002)")
    p.add_argument(
        "--max-streams",
        type=stream_count,
        default=8,
        help="cameras streaming at once, 1 - 1024; one more is refused (default 8)",
    )
    p.add_argument(
        "--expire-seconds",
        type=opt.positive_float,
        default=30.0,
        help="close and free a camera that sent nothing for this long (default 30)",
    )
    p.add_argument(
        "--fps", type=opt.positive_float, default=1.0, help="frames sampled per second of stream (default 1)"
    )
    p.add_argument(
        "--chunk-seconds",
        type=opt.positive_float,
        default=2.0,
        help="seconds per segment: frames then audio (default 2)",
    )
    p.add_argument(
        "--max-new-tokens", type=opt.positive_int, default=64, help="answer length unless asked (default 64)"
    )
    p.add_argument(
        "--threads", type=opt.thread_count, default=0, help="CPU threads per stage (default 0: one per core)"
    )
    p.add_argument(
        "--triton-log",
        type=log_file,
        default=None,
        metavar="FILE",
        help="write Triton's own log here (default: vinci-edge-serve-PID-triton.log in the temp folder)",
    )
    repository_cli.add_arguments(p)
    p.set_defaults(func=cmd_serve)


def check_ports(args: argparse.Namespace) -> None:
    """The three ports must differ (refused before anything is loaded)."""
    seen: dict[int, str] = {}
    for name in ("--http-port", "--grpc-port", "--metrics-port"):
        number = getattr(args, name[2:].replace("-", "_"))
        if number in seen:
            raise opt.UsageError(f"argument {name}: {number} is also {seen[number]}", "vinci-edge serve")
        seen[number] = name


def cmd_serve(args: argparse.Namespace) -> int:
    if args.export_repo is not None:  # a repository for a standalone tritonserver, not a server
        return repository_cli.export_from_args(args)
    check_ports(args)
    from vinci_edge.serve.server import ServeOptions, Server

    options = ServeOptions(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        max_streams=args.max_streams,
        expire_seconds=args.expire_seconds,
        fps=args.fps,
        chunk_seconds=args.chunk_seconds,
        max_new_tokens=args.max_new_tokens,
        threads=args.threads,
        triton_log=args.triton_log,
    )
    _say(f"loading the engine {args.engine}")
    server = Server(args.engine, options)
    stop = _stop_on_signals()
    _say(f"starting Triton Inference Server (its log: {server.triton_log})")
    server.start()
    try:
        print(f"HTTP    {server.http_url}  (health: {server.http_url}/v2/health/ready)", flush=True)
        print(f"gRPC    {server.grpc_url}", flush=True)
        print(f"metrics {server.metrics_url}", flush=True)
        _say(f"serving up to {options.max_streams} streams (Ctrl-C stops)")
        while not stop.wait(0.5):
            if not server.alive():
                _say("Triton stopped by itself")
                break
        _say("stopping: new questions are refused, queued ones answered")
    finally:
        server.stop()
    _say(_summary(server.stats()))
    return 0


def _stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM (the main thread waits for it)."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)
    return stop


def _summary(stats: dict[str, Any]) -> str:
    keys = ("admitted", "streams_refused", "ended", "expired", "stopped")
    return "stopped: " + ", ".join(f"{k.replace('_', ' ')} {stats[k]}" for k in keys)
