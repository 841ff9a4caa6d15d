"""A clock for health-monitor tests: each reading of it is one poll later."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Ticks:
    """Moves ``step`` seconds (the default health interval, 5 s) at each call."""

    def __init__(self, step: float = 5.0) -> None:
        self.now = datetime(2026, 12, 6, tzinfo=UTC)
        self.step = step

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=self.step)
        return self.now
