"""The replay cache: every accepted signature is remembered until its X-Sdk-Date leaves the clock-skew
window, after which the date check refuses it anyway. A second request with the same signature
inside the window is a replay."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

MAX_ENTRIES = 2_000_000


class ReplayCache:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._until: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._until)

    def _expire(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            _, sig = heapq.heappop(self._heap)
            if self._until.get(sig, now + 1) < now:
                del self._until[sig]

    def seen(self, signature: str) -> bool:
        now = self.clock()
        self._expire(now)
        return signature in self._until

    def full(self) -> bool:
        return len(self._until) >= MAX_ENTRIES

    def remember(self, signature: str, until: float) -> None:
        self._until[signature] = until
        heapq.heappush(self._heap, (until, signature))
