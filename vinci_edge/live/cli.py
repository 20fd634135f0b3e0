"""`vinci-edge live`: answer questions about a camera, a microphone, a stream or a file played as live.

    vinci-edge live --engine engine/ --source clip.mp4 --every 10 --question "Is anyone in danger?"
    vinci-edge live --engine engine/ --source /dev/video0 --mic --web          # console on :8080
    vinci-edge live --engine engine/ --source rtsp://cam/stream --alert fire='fire|smoke' --events log.jsonl

Questions come from --every (periodic, in stream time), --ask (once the stream has been taken in),
typed lines on a terminal, the web console (--web) and spoken commands (--vad). Answers stream to
stdout with the stream time they were asked at; `--json` prints every event as one JSON line
instead. Source notices (lost, reconnected, video only) go to stderr. A file played as live ends the
command when it has been taken in and every question is answered; a camera runs until Ctrl-C or
--duration.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Any

from vinci_edge import cli_options as opt
from vinci_edge.errors import PromptError
from vinci_edge.progress import to_stderr_as

_say = to_stderr_as("live")


def source_spec(text: str) -> str:
    """`type=` for --source: refused at parse time when no source kind takes it."""
    from vinci_edge.live.sources import parse_source

    try:
        parse_source(text)
        return text
    except PromptError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _alert_rule(text: str):
    from vinci_edge.live.alerts import alert_rule

    return alert_rule(text)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "live",
        help="answer questions about a live camera + microphone (or a file played as live)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--engine", required=True, type=Path, help="engine folder (from export or quantize)")
    opt.add_provider_options(p)
    p.add_argument(
        "--source",
        required=True,
        type=source_spec,
        help="a media file (played as live), rtsp:// or http:// URL, /dev/videoN, camera:N or gst:PIPELINE",
    )
    p.add_argument(
        "--mic",
        nargs="?",
        const="default",
        default=None,
        metavar="DEVICE",
        help="also listen to a microphone (sounddevice; default device when no name is given) "
        "(default: the source's own audio, if any)",
    )
    p.add_argument(
        "--fast", action="store_true", help="play a file as fast as the runtime takes it (default: real time)"
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
        "--static-threshold",
        type=opt.unit_interval,
        default=None,
        help="skip frames whose thumbnail differs from the last encoded one by less than this, 0..1 "
        "(default: off)",
    )
    p.add_argument(
        "--window", type=opt.IntRange(16), default=None, help="positions of media kept (default: the context)"
    )
    p.add_argument("--conversation", action="store_true", help="keep questions and answers in the cache")
    p.add_argument("--system-prompt", default=None, help="system prompt (default: the chat template's)")
    p.add_argument("--max-new-tokens", type=opt.positive_int, default=64, help="answer length (default 64)")
    p.add_argument(
        "--every",
        type=opt.positive_float,
        default=None,
        help="ask --question every N seconds of stream (default: no periodic question)",
    )
    p.add_argument(
        "--question",
        default="What is happening right now?",
        help="the periodic question (default: 'What is happening right now?')",
    )
    p.add_argument(
        "--ask",
        action="append",
        default=[],
        help="a question asked once the media is in, repeatable (default: none)",
    )
    p.add_argument(
        "--alert",
        action="append",
        type=_alert_rule,
        default=[],
        help="NAME=REGEX alert rule, repeatable (default: none)",
    )
    p.add_argument(
        "--events",
        type=Path,
        default=None,
        help="append every answer and alert to this JSONL file (default: no log)",
    )
    p.add_argument(
        "--frames-dir",
        type=Path,
        default=None,
        help="save the frame of each alert here as JPEG (default: not saved)",
    )
    p.add_argument("--vad", action="store_true", help="answer spoken commands: a question when speech ends")
    p.add_argument(
        "--speech-question",
        default="What did the person just ask for? Answer briefly.",
        help="the question asked when speech ends, with --vad (default: %(default)r)",
    )
    p.add_argument("--web", action="store_true", help="serve the web console")
    p.add_argument(
        "--host", default="127.0.0.1", help="web console address (default 127.0.0.1: this machine only)"
    )
    p.add_argument(
        "--port", type=opt.IntRange(0, 65535), default=8080, help="web console port (default 8080)"
    )
    p.add_argument(
        "--duration",
        type=opt.positive_float,
        default=None,
        help="stop after N seconds of stream (default: when the source ends, or Ctrl-C)",
    )
    p.add_argument(
        "--threads", type=opt.thread_count, default=0, help="CPU threads per stage (default 0: all)"
    )
    p.add_argument("--json", action="store_true", help="print every event as one JSON line on stdout")
    p.set_defaults(func=cmd_live)


def cmd_live(args: argparse.Namespace) -> int:
    from vinci_edge.generation import GenerationConfig
    from vinci_edge.live.session import LiveOptions, LiveSession
    from vinci_edge.live.sources import open_source
    from vinci_edge.runtime.pipeline import Pipeline

    sources = [open_source(args.source, realtime=not args.fast)]
    if args.mic is not None:
        sources += _microphone(args.mic, open_source)
    if args.vad and not any(s.audio for s in sources):
        raise PromptError("--vad needs audio", hint="add --mic, or give a --source with an audio track")
    options = LiveOptions(
        fps=args.fps,
        chunk_seconds=args.chunk_seconds,
        static_threshold=args.static_threshold,
        window=args.window,
        max_new_tokens=args.max_new_tokens,
        conversation=args.conversation,
        system_prompt=args.system_prompt,
    )
    _check_outputs(args)
    _say(f"loading the engine {args.engine}")
    session = LiveSession(
        Pipeline.from_engine(
            args.engine, provider=args.provider, stage_providers=args.stage_provider, threads=args.threads
        ),
        options,
    )
    printer = _Printer(args.json)
    session.subscribe(printer)
    extras = _attach(args, session)
    session.start(sources)
    _say(f"reading {', '.join(s.name for s in sources)}" + ("" if args.fast else " (Ctrl-C stops)"))
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens)
    try:
        _run(args, session, gen)
        for extra in extras:  # speech still going on when the stream ended is asked about now
            if hasattr(extra, "finish"):
                extra.finish()
    finally:
        session.stop()
        for extra in reversed(extras):
            extra.stop()
        _say(_summary(session.stats()))
    return 0


def _microphone(device: str, open_source) -> list:
    try:
        return [open_source("mic" if device == "default" else f"mic:{device}")]
    except PromptError as exc:
        _say(f"no microphone ({exc.message}): video only")
        return []


def _check_outputs(args: argparse.Namespace) -> None:
    """--events and --frames-dir are checked before anything is loaded."""
    if args.events or args.frames_dir:
        from vinci_edge.live.alerts import check_outputs

        check_outputs(args.events, args.frames_dir)


def _attach(args: argparse.Namespace, session) -> list:
    """The alert log, the triggers and the web console, each with a `stop()` (in that order)."""
    from vinci_edge.generation import GenerationConfig

    gen = GenerationConfig(max_new_tokens=args.max_new_tokens)
    extras: list[Any] = []
    watch = None
    if args.alert or args.events or args.frames_dir:
        from vinci_edge.live.alerts import AlertLog

        log = AlertLog(session, args.alert, args.events, args.frames_dir)
        extras.append(log)
        watch = log.watch  # an alert saves the frame its answer was about
    if args.every is not None:
        from vinci_edge.live.triggers import PeriodicTrigger

        extras.append(PeriodicTrigger(session, args.every, args.question, gen=gen, on_asked=watch))
    if args.vad:
        from vinci_edge.live.triggers import SpeechTrigger
        from vinci_edge.live.vad import SileroVAD, SpeechDetector

        # half a second of silence ends a command ("front, center" is one, not two)
        detector = SpeechDetector(SileroVAD(), min_silence_ms=500)
        extras.append(
            SpeechTrigger(
                session,
                detector,
                question_for=lambda t0, t1: args.speech_question,
                gen=gen,
                on_asked=None if watch is None else (lambda _segment, future: watch(future)),
            )
        )
    if sys.stdin is not None and sys.stdin.isatty():
        from vinci_edge.live.triggers import StdinQuestions

        extras.append(StdinQuestions(session, gen=gen, on_asked=watch))
    if args.web:
        from vinci_edge.live.web.server import WebConsole

        console = WebConsole(session, host=args.host, port=args.port)
        console.start()
        _say(f"web console at {console.url}")
        extras.append(console)
    return extras


def _run(args: argparse.Namespace, session, gen) -> None:
    """Until the stream ends (a file), --duration passes, or Ctrl-C; then the --ask questions."""
    while not session.join(timeout=0.2):  # a file taken in to its end (a camera never ends)
        now = session.media_until if args.fast else session.clock.now()
        if args.duration is not None and now >= args.duration:
            break
    for question in args.ask:
        session.ask(question, gen=gen, origin="cli")


def _summary(stats: dict[str, Any]) -> str:
    keys = (
        "segments",
        "frames_encoded",
        "frames_static",
        "frames_dropped",
        "answers",
        "refused",
        "evictions",
    )
    return "stopped: " + ", ".join(f"{k.replace('_', ' ')} {stats[k]}" for k in keys)


class _Printer:
    """Events on the terminal: questions and streamed answers on stdout, notices on stderr."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.lock = threading.Lock()
        self.open_answer: int | None = None  # the answer whose text is being printed

    def __call__(self, e: dict[str, Any]) -> None:
        with self.lock:
            if self.as_json:
                print(json.dumps(e, default=str), flush=True)
            else:
                self._human(e)

    def _human(self, e: dict[str, Any]) -> None:
        kind, t = e["type"], f"[{e['t']:7.1f}s]"
        if kind != "text" and self.open_answer is not None and kind in ("question", "alert", "refused"):
            print(flush=True)  # a question asked while another is answered starts its own line
            self.open_answer = None
        if kind == "question":
            media = f", media to {e['media_until']:.1f} s" if "media_until" in e else ""
            print(f"{t} Q{e['qid']} ({e['origin']}{media}) {e['question']}", flush=True)
        elif kind == "text":
            if self.open_answer != e["qid"]:
                print(f"{t} A{e['qid']} ", end="", flush=True)
                self.open_answer = e["qid"]
            print(e["text"], end="", flush=True)
        elif kind == "answer":
            prefix = "" if self.open_answer == e["qid"] else f"{t} A{e['qid']} "
            print(f"{prefix}   [first token {e['ttft_s']:.2f} s]", flush=True)
            self.open_answer = None
        elif kind == "refused":
            print(f"{t} Q{e['qid']} refused: {e['reason']}", flush=True)
        elif kind == "alert":
            print(f"{t} ALERT {e.get('rule')}: {e.get('answer', '')}", flush=True)
        elif kind in ("source", "error"):
            where = f"{e['source']}: {e['kind']}: " if kind == "source" else "error: "
            print(f"[vinci-edge live] {where}{e['message']}", file=sys.stderr, flush=True)
