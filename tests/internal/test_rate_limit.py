"""The per-source token bucket that bounds floods of hellos."""

from __future__ import annotations

import pytest

from accel.internal.rate_limit import RateLimiter, TooManyRequests


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    for _ in range(3):
        limiter.check("10.0.0.1")
    with pytest.raises(TooManyRequests):
        limiter.check("10.0.0.1")
    limiter.check("10.0.0.2")  # others are not held back
    clock.now = 0.5  # one token back at 2 per second
    limiter.check("10.0.0.1")
    with pytest.raises(TooManyRequests):
        limiter.check("10.0.0.1")


def test_memory_stays_bounded_under_a_flood_of_sources() -> None:
    limiter = RateLimiter(rate=1, burst=1, max_sources=100, clock=Clock())
    for index in range(10_000):
        limiter.check(f"10.{index // 65536}.{index // 256 % 256}.{index % 256}")
    assert len(limiter) == 100
