"""A token bucket per caller address, in bounded memory, against floods of hellos.

Each source gets ``burst`` hellos at once and ``rate`` a second after that. The
table of sources is bounded: past ``max_sources`` the least recently seen source
is forgotten, so a flood from many addresses cannot grow memory either.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import LRUCache

from accel.errors import AccelError


class TooManyRequests(AccelError):
    status_code = 429


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: int,
        max_sources: int = 65536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self.clock = clock
        # The sources heard from least recently are forgotten first (a full bucket).
        self._buckets: LRUCache[str, _Bucket] = LRUCache(max_sources)

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, source: str) -> None:
        """Spends one token of ``source``; TooManyRequests when it has none left."""
        now = self.clock()
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens < 1:
            raise TooManyRequests(
                f"too many hellos from {source}; at most {self.rate:g}/s "
                f"after a burst of {self.burst}"
            )
        bucket.tokens -= 1
