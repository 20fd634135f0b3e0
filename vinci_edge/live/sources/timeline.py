"""Stream times for media that arrives live: the arrival time, with the network's jitter taken out.

A live source's own timestamps (RTP, MPEG-TS, V4L2 or a sound card's sample count) start anywhere and
restart on every reconnect, so they cannot be stream times; the stream clock at arrival can, but
packets arrive in bursts, and audio blocks stamped by arrival alone would overlap one another or
leave gaps. So a `LiveTimeline` maps the source's media time onto the stream clock with one offset,
the smallest `arrival - media end` seen: the time a piece of media would have arrived had the
network never delayed it. Spacing then comes from the media (audio blocks follow one another
exactly) and the times never run ahead of arrival. When the mapping falls more than `max_lag`
behind arrival (the sender's clock drifts slower than ours, its timestamps jumped or restarted) it
is anchored to arrival again. Times never go backwards.
"""

from __future__ import annotations

import math

from vinci_edge.live.packets import stamp

MAX_LAG = 0.5  # seconds a mapped time may fall behind arrival before it is anchored again


class LiveTimeline:
    """Media times of one stream of one source -> stream-clock times (see the module docstring)."""

    def __init__(self, max_lag: float = MAX_LAG) -> None:
        self.max_lag = max_lag
        self._offset: float | None = None
        self._last = -math.inf

    def restart(self) -> None:
        """A new connection: its media times have nothing to do with the last one's. Times stay
        monotonic across it."""
        self._offset = None

    def at(self, media: float | None, arrival: float, duration: float = 0.0) -> float:
        """The stream time of media that starts at `media` (seconds, the source's own clock, None
        when it has none), lasts `duration`, and was complete at stream time `arrival`."""
        if media is None:
            return self._monotonic(arrival - duration)
        end = media + duration
        mapped = None if self._offset is None else end + self._offset
        if mapped is None or mapped > arrival or mapped < arrival - self.max_lag:
            self._offset = arrival - end
        return self._monotonic(media + self._offset)

    def _monotonic(self, t: float) -> float:
        self._last = max(self._last, stamp(t))
        return self._last
