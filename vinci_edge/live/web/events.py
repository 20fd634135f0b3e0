"""The session's events, fanned out to the console's browsers without ever holding the session up.

The session calls `EventHub.publish` from its own threads (a `session.subscribe` callback must return
quickly), so publishing only serializes the event once, appends it to a bounded ring (the replay a
page that connects late is shown) and to each client's bounded queue. A client that reads too slowly
loses its oldest queued events; they are counted, and the next read tells the client how many, so the
page can say it missed some. Memory stays bounded whatever the clients do.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

REPLAY_EVENTS = 200  # events kept for a page that connects late
CLIENT_QUEUE = 500  # events queued per client before its oldest are dropped


@dataclass(frozen=True)
class Item:
    """One published event: its sequence number (the SSE id) and its JSON text."""

    seq: int
    data: str


def to_json(event: dict[str, Any]) -> str:
    """The event as one line of JSON; numpy scalars and arrays become numbers and lists, anything
    else that JSON cannot hold becomes its text (an event must never fail to publish)."""
    return json.dumps(event, default=_jsonable, separators=(",", ":"))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return str(value)


class Client:
    """One connected browser's queue: bounded; when full the oldest event is dropped and counted."""

    def __init__(self, capacity: int) -> None:
        self._queue: deque[Item] = deque()
        self._capacity = capacity
        self._ready = threading.Condition()
        self.lost = 0  # events dropped for this client, in all
        self._untold = 0  # dropped since the client was last told
        self.closed = False

    def put(self, item: Item) -> None:
        with self._ready:
            if len(self._queue) >= self._capacity:
                self._queue.popleft()
                self.lost += 1
                self._untold += 1
            self._queue.append(item)
            self._ready.notify()

    def get(self, timeout: float) -> tuple[list[Item], int]:
        """The queued events and how many were dropped since the last call; waits up to `timeout`
        seconds for one (empty when none came or the client was closed)."""
        with self._ready:
            if not self._queue and not self.closed:
                self._ready.wait(timeout)
            items, untold = list(self._queue), self._untold
            self._queue.clear()
            self._untold = 0
            return items, untold

    def pending(self) -> int:
        with self._ready:
            return len(self._queue)

    def close(self) -> None:
        with self._ready:
            self.closed = True
            self._ready.notify_all()


class EventHub:
    """A ring of recent events and the clients they are fanned out to."""

    def __init__(self, replay: int = REPLAY_EVENTS, client_queue: int = CLIENT_QUEUE) -> None:
        self._lock = threading.Lock()
        self._ring: deque[Item] = deque(maxlen=replay)
        self._clients: list[Client] = []
        self._client_queue = client_queue
        self._seq = 0
        self._lost_gone = 0  # events lost by clients that have since disconnected
        self.closed = False

    def publish(self, event: dict[str, Any]) -> None:
        """Add an event (called from the session's threads: never blocks on a client)."""
        data = to_json(event)
        with self._lock:
            self._seq += 1
            item = Item(self._seq, data)
            self._ring.append(item)
            clients = list(self._clients)
        for client in clients:
            client.put(item)

    def connect(self, after: int | None = None) -> tuple[Client, list[Item]]:
        """A new client and the replay it starts with: the ring, or only the events after sequence
        number `after` (a browser reconnecting sends the last id it saw; one from before a restart,
        higher than any here, gets the whole ring)."""
        client = Client(self._client_queue)
        with self._lock:
            if after is not None and after > self._seq:
                after = None
            replay = [item for item in self._ring if after is None or item.seq > after]
            if self.closed:
                client.close()
            else:
                self._clients.append(client)
        return client, replay

    def disconnect(self, client: Client) -> None:
        client.close()
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)
                self._lost_gone += client.lost

    def close(self) -> None:
        """Wake every client so its connection ends (the console is stopping)."""
        with self._lock:
            self.closed = True
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def stats(self) -> dict[str, int]:
        with self._lock:
            clients = list(self._clients)
            return {
                "clients": len(clients),
                "events": self._seq,
                "replay": len(self._ring),
                "events_lost": self._lost_gone + sum(c.lost for c in clients),
            }
