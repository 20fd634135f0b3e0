"""Robot voice command: when someone stops speaking, ask the model for the command they gave, as JSON.

    python demos/robot_voice_command.py --engine engine/ --source /dev/video0 --mic
    python demos/robot_voice_command.py --engine engine/ --source speech.mp4 --fast
    python demos/robot_voice_command.py --server gpu-host:8001 --source /dev/video0 --mic   # VAD runs here

Silero VAD listens to the session's audio. When a stretch of speech ends, the model is asked, with
the audio up to the end of the speech in its cache and the frames it has seen, for the command as
{"action": ..., "object": ..., "direction": ...}. The first {...} of the answer is parsed; each
command is printed as one JSON line on stdout:

    {"t0": 2.03, "t1": 3.5, "qid": 1, "valid": true, "command": {"action": "pick", "object": "cup", ...}}
    {"t0": 5.2, "t1": 6.1, "qid": 2, "valid": false, "raw": "I am not sure what you mean."}

An answer that holds no JSON object, or one without a string "action", is reported as invalid with
its raw text: never a crash. Progress and the summary go to stderr.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from typing import Any

import _common as common

from vinci_edge import cli_options as opt
from vinci_edge.errors import PromptError
from vinci_edge.live.triggers import SpeechTrigger
from vinci_edge.live.vad import SpeechDetector, SpeechSegment

PROG = "robot_voice_command.py"
FIELDS = ("action", "object", "direction")
QUESTION = (
    "Someone just spoke to the robot (the last {seconds:.1f} seconds of audio). Reply with only the "
    'command they gave, as one JSON object: {{"action": "...", "object": "...", "direction": "..."}}; '
    "use null for a field they did not say."
)


def build_parser() -> opt.CommandLineParser:
    p = common.parser(PROG, __doc__.splitlines()[0])
    p.add_argument(
        "--threshold",
        type=opt.FloatRange(0.0, 1.0, open_minimum=True),
        default=0.5,
        help="speech probability that starts speech, in (0, 1] (default 0.5)",
    )
    p.add_argument(
        "--min-silence-ms",
        type=opt.FloatRange(0.0),
        default=500.0,
        help="silence that ends a command (default 500)",
    )
    p.add_argument(
        "--lookback",
        type=opt.FloatRange(0.0, open_minimum=True),
        default=8.0,
        help="the most seconds of speech one command is asked about (default 8)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    detector = SpeechDetector(threshold=args.threshold, min_silence_ms=args.min_silence_ms)
    sources = common.open_sources(args)
    if not any(s.audio for s in sources):
        raise PromptError(
            f"{args.source} has no audio to listen to", hint="add --mic, or a source with sound"
        )
    session = common.open_session(args, PROG)
    printer = CommandPrinter()
    with session:
        speech = SpeechTrigger(
            session,
            detector,
            question_for,
            args.lookback,
            gen=common.generation(args),
            on_asked=printer.watch,
        )
        common.say(PROG, "listening: a command is asked for each time speech ends")
        common.play(session, sources, args.duration)
        speech.finish()  # speech still going on when the stream ended is a command too
        common.wait_answered(speech.futures)
    common.say(
        PROG,
        f"{len(speech.segments)} speech segments: {printer.valid} valid commands, {printer.invalid} invalid, "
        f"{printer.refused} refused",
    )
    return 0


def question_for(t0: float, t1: float) -> str:
    return QUESTION.format(seconds=t1 - t0)


def parse_command(text: str) -> dict[str, Any]:
    """{"valid": True, "command": {action, object, direction}} from the first JSON object in `text`
    that has a string "action" (the other fields: strings or null); else {"valid": False, "raw": text}."""
    found = first_json_object(text)
    if found is None:
        return {"valid": False, "raw": text}
    command = {name: found.get(name) for name in FIELDS}
    values_ok = all(value is None or isinstance(value, str) for value in command.values())
    if not values_ok or not isinstance(command["action"], str) or not command["action"].strip():
        return {"valid": False, "raw": text}
    return {"valid": True, "command": command}


def first_json_object(text: str) -> dict[str, Any] | None:
    """The first {...} in `text` that parses as a JSON object (strings and nesting respected)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


class CommandPrinter:
    """Prints each speech question's answer as one command line, in the order the speech ended."""

    def __init__(self) -> None:
        self.valid = self.invalid = self.refused = 0
        self._lock = threading.Lock()

    def watch(self, segment: SpeechSegment, future: Any) -> None:
        future.add_done_callback(lambda f: self._print(segment, f))

    def _print(self, segment: SpeechSegment, future: Any) -> None:
        record: dict[str, Any] = {"t0": segment.t0, "t1": segment.t1}
        error = future.exception()
        with self._lock:
            if error is not None:
                self.refused += 1
                record.update(valid=False, refused=str(error))
            else:
                answer = future.result()
                record.update(qid=answer.qid, **parse_command(answer.text))
                self.valid += record["valid"]
                self.invalid += not record["valid"]
            common.emit(record)


if __name__ == "__main__":
    sys.exit(common.run_main(PROG, main))
