"""Where a Placement report's time goes: Placement's own time per call against the
conductor's (bench/placement.py).

Three clocks, read around each measured phase:

- the wall-clock time of each call as the conductor's client sees it (the keystoneauth
  Adapter wrapped), so ``seconds - sum of calls / concurrency`` is the conductor's
  own share of the wall clock;
- Placement's own time per request, from gunicorn's access log (``%(D)s``: from the
  request read to the response written, inside the worker), so the difference with
  the client's time is queueing for a worker and the wire;
- CPU seconds: the bench process (the conductor's loop and its SQLite database) and
  Placement's gunicorn processes, and of Placement's PostgreSQL server where it has
  one, from /proc.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keystoneauth1.adapter import Adapter

from bench.procfs import cpu_seconds

# gunicorn's access log line: the method and the request's time in microseconds.
ACCESS_FORMAT = "%(m)s %(D)s"


class TimedAdapter:
    """Wraps an Adapter's ``request`` to add up the time each call took, seen from
    the conductor."""

    def __init__(self, adapter: Adapter) -> None:
        self._request = adapter.request
        self._lock = threading.Lock()
        self.seconds = 0.0
        self.calls = 0
        adapter.request = self._timed  # type: ignore[method-assign]

    def _timed(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._request(*args, **kwargs)
        finally:
            took = time.perf_counter() - started
            with self._lock:
                self.seconds += took
                self.calls += 1


def tree_cpu(master: int | None) -> float:
    """CPU seconds so far of a master process (gunicorn's, PostgreSQL's) and its
    children (workers, backends)."""
    if master is None:
        return 0.0
    total = cpu_seconds(master)
    children = Path(f"/proc/{master}/task/{master}/children")
    for pid in children.read_text().split() if children.exists() else []:
        try:
            total += cpu_seconds(int(pid))
        except FileNotFoundError:
            continue  # a worker that just ended
    return total


def served_seconds(access_log: Path) -> tuple[int, float]:
    """Requests in Placement's access log and the seconds its workers spent on them."""
    count, micros = 0, 0
    if access_log.exists():
        for line in access_log.read_text().splitlines():
            _, _, took = line.rpartition(" ")
            if took.isdigit():
                count += 1
                micros += int(took)
    return count, micros / 1e6


@dataclass(frozen=True)
class Split:
    """One phase's clocks (differences of ``Clocks.read``)."""

    wall: float
    calls: int
    client_seconds: float
    served: int
    served_seconds: float
    conductor_cpu: float
    placement_cpu: float
    database_cpu: float

    def ms_per_call(self) -> tuple[float, float]:
        """Per call: as the conductor waited for it, as Placement's worker spent on it."""
        return (
            1000 * self.client_seconds / (self.calls or 1),
            1000 * self.served_seconds / (self.served or 1),
        )


class Clocks:
    def __init__(
        self, timed: TimedAdapter, master: int, access_log: Path, database: int | None
    ) -> None:
        self.timed = timed
        self.master = master
        self.access_log = access_log
        self.database = database

    def read(self) -> tuple[float, ...]:
        served, seconds = served_seconds(self.access_log)
        return (
            time.perf_counter(),
            float(self.timed.calls),
            self.timed.seconds,
            float(served),
            seconds,
            time.process_time(),
            tree_cpu(self.master),
            tree_cpu(self.database),
        )

    def since(self, before: tuple[float, ...]) -> Split:
        now = self.read()
        wall, calls, client, served, seconds, mine, theirs, database = (
            b - a for a, b in zip(before, now, strict=True)
        )
        return Split(wall, int(calls), client, int(served), seconds, mine, theirs, database)


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())
