"""The replay cache: every accepted signature is remembered, with the connection it came on, until its
X-Sdk-Date leaves the clock-skew window (after which the date check refuses it anyway). The same
signature again inside the window is a replay - except a read (GET/HEAD) repeated on the very same
client connection: the SDK's X-Sdk-Date has one-second resolution and no nonce, so a client polling
faster than once a second sends byte-identical requests on its keep-alive connection, and nobody
but that client can send on it."""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable

MAX_ENTRIES = 2_000_000


class ReplayCache:
    """signature -> the connection it was first accepted on, plus the signatures grouped by the whole
    second their window ends in, so that expiry drops whole groups (no per-entry heap or timestamp:
    at thousands of signed requests a second, a lean entry is what keeps this cache cheap)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._seen: dict[str, str] = {}
        self._expiring: dict[int, list[str]] = {}  # second -> signatures whose window ends then
        self._seconds: list[int] = []  # heap of the keys of _expiring
        self._swept = -1  # signatures expiring before this second are gone

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        second = int(now)
        if second == self._swept:
            return
        self._swept = second
        while self._seconds and self._seconds[0] < second:
            for sig in self._expiring.pop(heapq.heappop(self._seconds)):
                self._seen.pop(sig, None)

    def first_connection(self, signature: str) -> str | None:
        """The connection a signature was first accepted on, or None when it is new."""
        self._expire(self.clock())
        return self._seen.get(signature)

    def full(self) -> bool:
        return len(self._seen) >= MAX_ENTRIES

    def remember(self, signature: str, until: float, connection: str) -> None:
        """Keep `signature` until the end of second `until` (rounded up: never forgotten early)."""
        if signature in self._seen:
            return
        self._seen[signature] = connection
        second = math.ceil(until)
        group = self._expiring.get(second)
        if group is None:
            group = self._expiring[second] = []
            heapq.heappush(self._seconds, second)
        group.append(signature)
