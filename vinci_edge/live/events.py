"""A session's events: listeners subscribe, the session publishes JSON-able dicts to them.

Shared by the local `LiveSession` and the server-side `RemoteSession`, which need the same surface
(the triggers, the alert log and the web console subscribe to either).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

Listener = Callable[[dict[str, Any]], None]


class Publishing:
    """`subscribe` / `publish` for a class that has a `clock` (its stream clock) and sets
    `self._listeners = []`."""

    clock: Any
    _listeners: list[Listener]

    def subscribe(self, fn: Listener) -> Callable[[], None]:
        """Call `fn(event)` for every event; returns the function that unsubscribes it."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def publish(self, event: dict[str, Any]) -> None:
        """Stamp `event` with the stream time (unless it has one) and give it to every listener."""
        event.setdefault("t", self.clock.now())
        for fn in list(self._listeners):
            with contextlib.suppress(Exception):  # a listener's bug must not stop the stream
                fn(event)
