"""Per-credential rate limiting: a token bucket for each access key or token."""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_BUCKETS = 100_000  # credentials tracked at once (~150 bytes each)


class RateLimiter:
    def __init__(self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_buckets: int = MAX_BUCKETS) -> None:
        self.rate = per_second
        self.burst = max(1, burst)
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, key: str) -> float:
        """0 when the request may go on (and is counted); otherwise seconds until it would."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        bucket = self._buckets.get(key)
        full = float(self.burst)
        tokens = full if bucket is None else min(full, bucket[0] + (now - bucket[1]) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
        if key not in self._buckets and len(self._buckets) >= self.max_buckets:
            self._make_room(now)
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0

    def _make_room(self, now: float) -> None:
        """Forget the buckets that have refilled (a new bucket starts full: nothing is lost), and if
        every bucket is still refilling, all of them (a flood of credentials cannot grow the table)."""
        full = float(self.burst)
        self._buckets = {k: v for k, v in self._buckets.items() if v[0] + (now - v[1]) * self.rate < full}
        if len(self._buckets) >= self.max_buckets:
            self._buckets.clear()
