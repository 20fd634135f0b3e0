"""Factory monitor: a safety question every N seconds of a live camera, alerts, a JSONL event log.

    python demos/factory_monitor.py --engine engine/ --source /dev/video0 --every 10
    python demos/factory_monitor.py --engine engine/ --source line3.mp4 --fast --events run.jsonl
    python demos/factory_monitor.py --server gpu-host:8001 --camera line3 --source /dev/video0

Every `--every` seconds of stream time the model is asked the safety question about what the cache
holds (the frames and sound so far, up to the session's window). Every answer goes to the event
log; one that matches an `--alert NAME=REGEX` rule (default: danger = a "yes", "unsafe", "fire" or
"fall") is an alert: a line on stdout, a line in the log, and the frame the model saw saved as a
JPEG. At the end (the source ended, --duration passed, Ctrl-C) a summary line: questions, answers,
alerts, frames dropped. stdout holds JSON lines only; progress goes to stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import _common as common

from vinci_edge import cli_options as opt
from vinci_edge.live.alerts import AlertLog, alert_rule, check_outputs
from vinci_edge.live.triggers import PeriodicTrigger

PROG = "factory_monitor.py"
QUESTION = "Is anyone in danger or is anything unsafe? Answer yes or no, then why."
DANGER = r"danger=\byes\b|unsafe|fire|fall"


def build_parser() -> opt.CommandLineParser:
    p = common.parser(PROG, __doc__.splitlines()[0])
    p.add_argument(
        "--question",
        type=opt.prompt_text,
        default=QUESTION,
        help=f"the periodic question (default: {QUESTION!r})",
    )
    p.add_argument(
        "--every",
        type=opt.FloatRange(0.0, open_minimum=True),
        default=10.0,
        help="seconds of stream between questions (default 10)",
    )
    p.add_argument(
        "--alert",
        type=alert_rule,
        action="append",
        metavar="NAME=REGEX",
        help=f"an alert for answers the regex finds (case-insensitive), repeatable (default: {DANGER})",
    )
    p.add_argument(
        "--events",
        type=Path,
        default=Path("factory_events.jsonl"),
        help="JSONL event log, appended to (default: factory_events.jsonl)",
    )
    p.add_argument(
        "--frames-dir",
        type=Path,
        default=Path("factory_frames"),
        help="where alert frames are saved as JPEG (default: factory_frames/)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rules = args.alert or [alert_rule(DANGER)]
    check_outputs(args.events, args.frames_dir)  # a path that cannot be written costs nothing yet
    sources = common.open_sources(args)
    session = common.open_session(args, PROG)
    log = AlertLog(session, rules, args.events, args.frames_dir)
    session.subscribe(_print_alerts)
    every = f"every {args.every:g} s of stream"
    common.say(PROG, f"asking {every}; alert rules: {', '.join(r.name for r in rules)}")
    with log, session:  # on the way out the session stops first, then the log writes what is left
        periodic = PeriodicTrigger(
            session, args.every, args.question, gen=common.generation(args), on_asked=log.watch
        )
        common.play(session, sources, args.duration)
        periodic.stop()
        common.wait_answered(periodic.futures)
        stats = session.stats()
    common.emit(
        {
            "type": "summary",
            "questions": periodic.asked,
            "skipped": periodic.skipped,
            "answers": log.answers,
            "alerts": log.alerts,
            "frames_dropped": stats["frames_dropped"],
            "audio_blocks_dropped": stats["audio_blocks_dropped"],
            "stream_seconds": stats["media_until"],
            "events": str(args.events),
            "frames_dir": str(args.frames_dir),
        }
    )
    return 0


def _print_alerts(event: dict) -> None:
    if event.get("type") == "alert":
        common.emit(event)


if __name__ == "__main__":
    sys.exit(common.run_main(PROG, main))
