"""The live session's web console: a page with the live view, questions and their streamed answers,
alerts, source notices, counters and a latency chart, served by the standard library
(`WebConsole`)."""

from vinci_edge.live.web.server import WebConsole

__all__ = ["WebConsole"]
