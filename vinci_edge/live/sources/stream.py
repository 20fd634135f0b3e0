"""A network stream as a live source: RTSP, HTTP, UDP, RTMP, ... anything FFmpeg (in PyAV) opens.

Media is stamped by its arrival on the stream clock (see `timeline`): the sender's timestamps restart
on every reconnect, the stream clock does not. A stream that fails or ends is reported (LOST) and
opened again until `stop` (see `live`). With `listen=True` the source is the server and a sender
pushes to it (`ffmpeg ... -f rtsp rtsp://this-host:8554/live`).

Every wait is bounded, so a dead server never holds the reading thread for long: PyAV's own
(open, read) timeouts, FFmpeg's socket timeouts (RTSP `timeout`, other protocols `rw_timeout`, both
in microseconds), and in listen mode a one-second `listen_timeout` (RTSP: seconds, HTTP: ms) after
which the source listens again.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit, urlunsplit

import av

from vinci_edge.errors import PromptError
from vinci_edge.live.packets import Sink, StreamClock
from vinci_edge.live.sources.audio import BLOCK_SECONDS, SAMPLE_RATE
from vinci_edge.live.sources.avconnection import AvConnection, Opening, SourceState
from vinci_edge.live.sources.live import LiveRunner, Retry

# URL schemes the stream source takes (FFmpeg protocols; `srt` only where FFmpeg has libsrt)
STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https", "udp", "rtp", "tcp", "rtmp", "rtmps", "srt")
_RTSP = ("rtsp", "rtsps")
_LISTENERS = ("rtsp", "http", "tcp", "rtmp")  # schemes FFmpeg can be the server of


class StreamSource:
    """A network stream read live, reconnecting by itself (see the module docstring)."""

    realtime = True

    def __init__(
        self,
        url: str,
        listen: bool = False,
        *,
        retry: Retry | None = None,
        open_timeout: float = 10.0,
        read_timeout: float = 5.0,
        options: dict[str, str] | None = None,
        block_seconds: float = BLOCK_SECONDS,
    ) -> None:
        """`options` are FFmpeg options added to (and overriding) the ones chosen here; `retry` says
        how a lost stream is tried again (default: forever, 0.5 s doubling to 8 s)."""
        scheme = _check_url(url, listen)
        self.url = url
        self.name = redact(url)
        self.listen = listen
        self._opening = Opening(
            url=url,
            format=None,
            options={**_options(scheme, listen, read_timeout), **(options or {})},
            timeout=(None if listen else open_timeout, read_timeout),
            listening=listen,
        )
        self._block_samples = max(1, round(block_seconds * SAMPLE_RATE))
        self._state = SourceState()
        if listen:
            _check_port_free(url)
        again, ended = (
            ("listening again", "the sender stopped") if listen else ("reconnecting", "the stream ended")
        )
        self._runner = LiveRunner(self.name, self._connect, retry or Retry(), again=again, ended=ended)

    def run(self, clock: StreamClock, sink: Sink, stop: threading.Event) -> None:
        self._runner.run(clock, sink, stop)

    @property
    def video(self) -> bool:
        """Delivers frames: True until a connection shows a stream without video."""
        return self._state.has_video is not False

    @property
    def audio(self) -> bool:
        """Delivers audio: True until a connection shows a stream without audio."""
        return self._state.has_audio is not False

    @property
    def damaged_packets(self) -> int:
        """Packets that failed to decode and were skipped (joining between keyframes gives some)."""
        return self._state.damage.packets

    def _connect(self, clock: StreamClock, stop: threading.Event) -> AvConnection:
        return AvConnection(self._opening, clock, stop, self._state, self._block_samples)


def _options(scheme: str, listen: bool, io_timeout: float) -> dict[str, str]:
    """FFmpeg options: bounded socket waits, RTSP over TCP, the server side when listening (each
    protocol spells its one-second wait for a sender its own way), and a short probe (0.5 s instead
    of 5): what FFmpeg reads to learn the streams comes out in one burst when the open returns, all
    stamped at that moment, so the less of it the better."""
    microseconds = str(round(io_timeout * 1e6))
    options = {"analyzeduration": "500000"}
    if scheme in _RTSP:
        options["timeout"] = microseconds  # RTSP's socket timeout (rw_timeout is not its option)
        if not listen:
            return options | {"rtsp_transport": "tcp"}
        return options | {"rtsp_flags": "listen", "listen_timeout": "1"}  # seconds
    options["rw_timeout"] = microseconds
    if listen and scheme == "rtmp":
        return options | {"listen": "1", "timeout": "1"}  # seconds
    if listen:
        return options | {"listen": "1", "listen_timeout": "1000"}  # milliseconds (http, tcp)
    return options


def _check_url(url: str, listen: bool) -> str:
    """The URL's scheme, once it is one the source takes and this FFmpeg can open."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in STREAM_SCHEMES:
        raise PromptError(
            f"not a stream URL: {redact(url)}",
            hint="give a URL starting with " + ", ".join(f"{s}://" for s in STREAM_SCHEMES),
        )
    if listen and scheme not in _LISTENERS:
        raise PromptError(
            f"cannot listen for {scheme}:// streams",
            hint="listen with rtsp:// or http:// (a sender then pushes to it), or drop listen",
        )
    if not protocol_available(scheme):
        raise PromptError(
            f"this FFmpeg (in PyAV) cannot open {scheme}:// URLs",
            hint="relay it with the ffmpeg command, e.g. `ffmpeg -i URL -c copy -f mpegts "
            "udp://127.0.0.1:5000`, and read udp://127.0.0.1:5000",
        )
    return scheme


_DEFAULT_PORTS = {"rtsp": 554, "http": 80, "tcp": 0, "rtmp": 1935}


def _check_port_free(url: str) -> None:
    """Refuse to listen where another program already does (FFmpeg would fail on every try)."""
    parts = urlsplit(url)
    port = parts.port if parts.port is not None else _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    with socket.socket(socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as FFmpeg's listening socket
        try:
            probe.bind((parts.hostname or "0.0.0.0", port))
        except OSError as exc:
            raise PromptError(
                f"cannot listen on {parts.hostname or '0.0.0.0'}:{port} ({exc.strerror or exc})",
                hint="another program listens there, or the address is not this machine's: "
                "pick another port, or 0.0.0.0 for every interface"
                + ("; ports below 1024 need root" if 0 < port < 1024 else ""),
            ) from None


def protocol_available(scheme: str) -> bool:
    """Whether PyAV's FFmpeg has the protocol: an unknown one fails before any I/O; a known one
    fails on a closed local port (or the 50 ms timeout) for another reason."""
    try:
        av.open(f"{scheme}://127.0.0.1:1", timeout=(0.05, 0.05)).close()
    except av.ProtocolNotFoundError:
        return False
    except (av.FFmpegError, OSError):
        pass
    return True


def redact(url: str) -> str:
    """The URL with any password replaced: names appear in messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
