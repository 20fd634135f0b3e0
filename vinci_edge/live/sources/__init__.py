"""Live sources: files played as if live, network streams, cameras and microphones, each pushing
frames, audio blocks and notices into a `Sink` on the session's stream clock (see `packets`).

- `file`: `FileSource`, any media file through PyAV, paced in real time or as fast as the sink takes it
- `stream`: `StreamSource`, RTSP / HTTP / UDP / RTMP through PyAV, reconnecting, optionally listening
- `camera`: `CameraSource`, a V4L2 device through PyAV, or a GStreamer pipeline through OpenCV
- `microphone`: `MicrophoneSource`, an input device through sounddevice (PortAudio)
- `spec`: `parse_source` / `open_source`, what a source argument names
- `live`, `avconnection`, `timeline`, `audio`: reading in a worker thread with reconnects, one PyAV
  connection, arrival times without jitter, mono 16 kHz audio blocks
"""

from vinci_edge.live.sources.camera import CameraSource
from vinci_edge.live.sources.file import FileSource
from vinci_edge.live.sources.live import Retry
from vinci_edge.live.sources.microphone import MicrophoneSource
from vinci_edge.live.sources.spec import SourceSpec, open_source, parse_source
from vinci_edge.live.sources.stream import StreamSource

__all__ = [
    "CameraSource",
    "FileSource",
    "MicrophoneSource",
    "Retry",
    "SourceSpec",
    "StreamSource",
    "open_source",
    "parse_source",
]
