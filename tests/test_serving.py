"""How a serving process collects its garbage (accel.serving.collect_rarely)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from accel.serving import GC_THRESHOLDS, collect_rarely, connection_cap


class Node:
    def __init__(self) -> None:
        self.peer: Node | None = None


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_the_heap_built_before_serving_is_frozen_and_collections_are_rarer() -> None:
    built_before = Node()
    collect_rarely()

    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0
    assert not any(built_before is obj for obj in gc.get_objects())


@pytest.mark.usefixtures("restored_collector")
def test_cycles_made_while_serving_are_still_collected_on_their_own() -> None:
    collect_rarely()
    gc.collect()  # the count of allocations since the last collection starts at 0
    first, second = Node(), Node()
    first.peer, second.peer = second, first
    gone = weakref.ref(first)
    del first, second

    # Enough allocations for one young collection, and no call to the collector.
    kept: list[list[int]] = [[] for _ in range(GC_THRESHOLDS[0] + 1)]

    assert gone() is None
    assert len(kept) > GC_THRESHOLDS[0]


@pytest.mark.parametrize(
    ("file_limit", "cap"),
    [
        (512, 256),
        (1024, 768),
        (20000, 15000),
        (1 << 20, 3 << 18),
        (300, 64),
        (100, 64),
        (-1, 65536),
    ],
)
def test_connections_leave_descriptors_for_the_database_and_peers(
    file_limit: int, cap: int
) -> None:
    assert connection_cap(file_limit) == cap
