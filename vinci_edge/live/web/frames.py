"""The newest sampled frame as a JPEG, encoded at most a few times a second whatever the page asks.

Every browser polls `/frame.jpg`; encoding for each request would cost the session's CPU. The cache
keeps the last JPEG with the stream time of its frame: the same frame is never encoded twice, and the
session is asked for a newer one at most once every `min_interval` seconds.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

MAX_SIDE = 960  # a larger frame is scaled down for the page (the model saw what it saw)
QUALITY = 80

LatestFrame = Callable[[], "tuple[float, np.ndarray] | None"]


class FrameCache:
    """`get()` -> (stream time, JPEG bytes) of the newest frame, or None before the first one."""

    def __init__(self, latest_frame: LatestFrame, min_interval: float = 0.25) -> None:
        self._latest_frame = latest_frame
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._cached: tuple[float, bytes] | None = None
        self._checked_at = float("-inf")  # time.monotonic() the session was last asked
        self.encodings = 0

    def get(self) -> tuple[float, bytes] | None:
        with self._lock:
            if self._cached is not None and time.monotonic() - self._checked_at < self._min_interval:
                return self._cached
            latest = self._latest_frame()
            if latest is None:
                return self._cached
            t, rgb = latest
            if self._cached is None or self._cached[0] != t:
                self._cached = (t, encode_jpeg(rgb))
                self.encodings += 1
            self._checked_at = time.monotonic()
            return self._cached


def encode_jpeg(rgb: np.ndarray, max_side: int = MAX_SIDE, quality: int = QUALITY) -> bytes:
    """An (H, W, 3) uint8 RGB frame as JPEG bytes, its longest side at most `max_side` pixels."""
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
