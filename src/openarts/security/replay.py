"""The replay cache: every accepted signature is remembered, with the connection it came on, until its
X-Sdk-Date leaves the clock-skew window (after which the date check refuses it anyway). The same
signature again inside the window is a replay - except a read (GET/HEAD) repeated on the very same
client connection: the SDK's X-Sdk-Date has one-second resolution and no nonce, so a client polling
faster than once a second sends byte-identical requests on its keep-alive connection, and nobody
but that client can send on it."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

MAX_ENTRIES = 2_000_000


class ReplayCache:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._seen: dict[str, tuple[float, str]] = {}  # signature -> (until, connection)
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            _, sig = heapq.heappop(self._heap)
            entry = self._seen.get(sig)
            if entry is not None and entry[0] < now:
                del self._seen[sig]

    def first_connection(self, signature: str) -> str | None:
        """The connection a signature was first accepted on, or None when it is new."""
        self._expire(self.clock())
        entry = self._seen.get(signature)
        return None if entry is None else entry[1]

    def full(self) -> bool:
        return len(self._seen) >= MAX_ENTRIES

    def remember(self, signature: str, until: float, connection: str) -> None:
        if signature in self._seen:
            return
        self._seen[signature] = (until, connection)
        heapq.heappush(self._heap, (until, signature))
