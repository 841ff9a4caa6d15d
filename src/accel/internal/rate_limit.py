"""A token bucket per caller address, in bounded memory, against floods of hellos.

Each source gets ``burst`` hellos at once and ``rate`` a second after that. The
table of sources is bounded: past ``max_sources`` the least recently seen source
is forgotten, so a flood from many addresses cannot grow memory either.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

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
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, source: str) -> None:
        """Spends one token of ``source``; TooManyRequests when it has none left."""
        now = self.clock()
        bucket = self._buckets.pop(source, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        self._buckets[source] = bucket
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        if bucket.tokens < 1:
            raise TooManyRequests(
                f"too many hellos from {source}; at most {self.rate:g}/s "
                f"after a burst of {self.burst}"
            )
        bucket.tokens -= 1
