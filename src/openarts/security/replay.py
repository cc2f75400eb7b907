"""The replay cache: every accepted signature that must not be accepted twice is remembered until its
X-Sdk-Date leaves the clock-skew window (after which the date check refuses it anyway); the same
signature again inside the window is a replay. Which requests it guards is the guard's choice
(`[security] replay_protection`: by default only requests that can change state, see
docs/SECURITY.md): the SDK's X-Sdk-Date has one-second resolution and no nonce, so two threads of one
client reading the same thing in the same second send byte-identical requests.

Bounded: at most MAX_ENTRIES signatures (about 116 bytes each); when it is full the guard refuses new
guarded requests with 429 until entries expire, rather than forgetting a signature early."""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable

MAX_ENTRIES = 500_000  # ~60 MB at most: one access key writing at the default rate limit (50/s) for the
# whole 15-minute window fills 45,000; reads are not remembered unless replay_protection = "strict"


class ReplayCache:
    """The signatures (as 32-byte digests, half the size of their hex text), grouped by the whole
    second their window ends in, so that expiry drops whole groups (no per-entry heap or timestamp:
    at thousands of signed requests a second, a lean entry is what keeps this cache cheap)."""

    def __init__(self, clock: Callable[[], float] = time.time, max_entries: int = MAX_ENTRIES) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._seen: set[bytes] = set()
        self._expiring: dict[int, list[bytes]] = {}  # second -> signatures whose window ends then
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
                self._seen.discard(sig)

    @staticmethod
    def _digest(signature: str) -> bytes:
        try:
            return bytes.fromhex(signature)
        except ValueError:  # never from the verifier (it accepts only a matching 64-hex HMAC): kept as is
            return signature.encode()

    def seen(self, signature: str) -> bool:
        """Whether `signature` was accepted before and its window has not ended."""
        self._expire(self.clock())
        return self._digest(signature) in self._seen

    def full(self) -> bool:
        self._expire(self.clock())
        return len(self._seen) >= self.max_entries

    def remember(self, signature: str, until: float) -> None:
        """Keep `signature` until the end of second `until` (rounded up: never forgotten early)."""
        sig = self._digest(signature)
        if sig in self._seen:
            return
        self._seen.add(sig)
        second = math.ceil(until)
        group = self._expiring.get(second)
        if group is None:
            group = self._expiring[second] = []
            heapq.heappush(self._seconds, second)
        group.append(sig)
