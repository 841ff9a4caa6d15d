"""The Placement loop's settings, apart from the loop so that a conductor that does
not report to Placement never imports keystoneauth1."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlacementSettings:
    # Seconds between rounds (a round that finds nothing changed costs two queries).
    tick: float = 2.0
    # Seconds between drift checks of a node whose tree did not change (2 calls each).
    check_interval: float = 600.0
    # Seconds before a failed report is tried again, doubled on each failure.
    retry_after: float = 5.0
    # Nodes reported at once (``--placement-concurrency``): enough to keep several
    # Placement workers busy, few enough that one report ends well within its lease
    # even when Placement is slow. A node is claimed only when a slot is free.
    concurrency: int = 8
    # Nodes claimed by one ``PlacementLoop.round`` (rounds run by hand: tests, bench).
    batch: int = 16
    # Seconds a claimed node stays this conductor's while its report runs.
    lease: float = 120.0
