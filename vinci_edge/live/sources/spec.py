"""What a source argument names: a file, a stream URL, a camera or a microphone.

`parse_source` only reads the text (and looks whether a file exists), so the command line can check
its arguments before loading anything; `open_source` then builds the source, which probes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vinci_edge.errors import PromptError
from vinci_edge.live.packets import Source
from vinci_edge.live.sources.camera import CameraSource
from vinci_edge.live.sources.file import FileSource
from vinci_edge.live.sources.microphone import MicrophoneSource
from vinci_edge.live.sources.stream import STREAM_SCHEMES, StreamSource

SourceKind = Literal["file", "stream", "camera", "microphone"]

FORMS = (
    "a media file (clip.mp4), "
    "a stream URL (" + ", ".join(f"{s}://" for s in STREAM_SCHEMES) + "), "
    "a camera (/dev/video0, camera:0, gst:<GStreamer pipeline>), "
    "or a microphone (mic, mic:<device index or name>)"
)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class SourceSpec:
    kind: SourceKind
    target: str | None  # the path, URL, camera device or pipeline, microphone device (None: default)


def parse_source(spec: str) -> SourceSpec:
    """Which kind of source `spec` names, or a PromptError listing the forms accepted."""
    text = spec.strip()
    if not text:
        raise PromptError("no source given", hint=f"give {FORMS}")
    if text == "mic":
        return SourceSpec("microphone", None)
    prefix, _, rest = text.partition(":")
    if prefix in ("mic", "camera", "gst") and not rest.strip():
        raise PromptError(f"{prefix}: needs something after it: {text!r}", hint=f"give {FORMS}")
    if prefix == "mic":
        return SourceSpec("microphone", rest.strip())
    if prefix == "gst":
        return SourceSpec("camera", text)
    if prefix == "camera":
        if not rest.strip().isdigit():
            raise PromptError(
                f"camera: takes a device number, got {rest!r}", hint="e.g. camera:0 for /dev/video0"
            )
        return SourceSpec("camera", f"/dev/video{int(rest)}")
    if text.startswith("/dev/video"):
        return SourceSpec("camera", text)
    scheme = _SCHEME.match(text)
    if scheme:
        if scheme.group(1).lower() not in STREAM_SCHEMES:
            raise PromptError(
                f"unsupported URL scheme {scheme.group(1)}:// in {text!r}", hint=f"give {FORMS}"
            )
        return SourceSpec("stream", text)
    return SourceSpec("file", str(_existing_file(text)))


def open_source(spec: str, realtime: bool = True, *, listen: bool = False) -> Source:
    """The source `spec` names, probed (a missing file, device or microphone is a PromptError).
    `realtime` applies to files (False: as fast as the sink takes them), `listen` to stream URLs
    (wait for a sender to push to it)."""
    parsed = parse_source(spec)
    if listen and parsed.kind != "stream":
        raise PromptError(f"only a stream URL can listen, not {spec!r}", hint="e.g. rtsp://0.0.0.0:8554/live")
    if parsed.kind == "file":
        return FileSource(parsed.target, realtime=realtime)
    if parsed.kind == "stream":
        return StreamSource(parsed.target, listen=listen)
    if parsed.kind == "camera":
        return CameraSource(parsed.target)
    return MicrophoneSource(parsed.target)


def _existing_file(text: str) -> Path:
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise PromptError(f"{text} is a folder, not a media file", hint=f"give {FORMS}")
    raise PromptError(f"no such file: {text}", hint=f"a source is {FORMS}")
