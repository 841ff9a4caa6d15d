"""Logging a recurring failure at most once every few seconds.

A flood (of connections past the cap, of requests while the database is away) must
not become a flood of log lines: the first line says it started, one now and then
that it goes on.
"""

from __future__ import annotations

import time


class EveryFew:
    """Says whether a line may be logged now: at most once every ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last = -seconds

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.seconds:
            return False
        self._last = now
        return True
