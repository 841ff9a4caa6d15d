"""What makes Placement reports fast, against a real Placement 16 (one per module).

The loop reports several nodes at once, each on its own: ``--placement-concurrency``
reports in flight, never more, and a node that hangs or fails holds its own slot
only. A node whose root the last report found costs one call to read its tree, and
a root that is no longer that node's is looked up by name again."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.placement.loop import PlacementLoop
from accel.conductor.placement.settings import PlacementSettings
from accel.db.models import Device, PlacementNode
from accel.driver.fake_sysfs import FakeSysfs
from accel.internal.schemas import Kind
from accel.states import DeviceStatus
from tests.databases import migrated_sessions
from tests.os_services.placement_rounds import (
    FAST,
    hardware,
    loop_for,
    node_row,
    run_round,
    store,
)
from tests.placement_service import ThrowawayPlacement, children, make_root
from tests.postgres import ThrowawayPostgres, open_connections

DEADLINE = 60.0


class Watched:
    """Wraps the loop's Adapter: counts the calls in flight, and runs ``before`` (which
    may block, boundedly) ahead of each root lookup, given the node's name."""

    def __init__(self, loop: PlacementLoop, before: Callable[[str], None]) -> None:
        self._request = loop.client.adapter.request
        self._before = before
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        loop.client.adapter.request = self._request_watched  # type: ignore[method-assign,assignment]

    def _request_watched(self, path: str, method: str, **kwargs: Any) -> Any:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            name = (kwargs.get("params") or {}).get("name")
            if method == "GET" and name is not None:
                self._before(name)
            return self._request(path, method, **kwargs)
        finally:
            with self._lock:
                self.in_flight -= 1


def nodes(count: int, tag: str) -> list[str]:
    return [f"{tag}-{uuid.uuid4().hex[:8]}-{n}" for n in range(count)]


def settings(concurrency: int) -> PlacementSettings:
    return PlacementSettings(
        tick=0.05, retry_after=600.0, check_interval=600.0, concurrency=concurrency, batch=1
    )


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


def reported(sessions: sessionmaker[Session], names: list[str]) -> Callable[[], bool]:
    def done() -> bool:
        with sessions() as session:
            rows = session.scalars(select(PlacementNode).where(PlacementNode.node.in_(names)))
            return sorted(row.node for row in rows if not row.pending) == sorted(names)

    return done


def failed(sessions: sessionmaker[Session], name: str) -> bool:
    with sessions() as session:
        error = session.scalar(select(PlacementNode.last_error).where(PlacementNode.node == name))
        return error is not None


async def running(loop: PlacementLoop, scenario: Callable[[], Any]) -> None:
    """Runs ``scenario`` while the loop runs as a conductor runs it."""
    task = asyncio.create_task(loop.run())
    try:
        await scenario()
        assert not task.done(), "the loop stopped"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_several_nodes_are_reported_at_once_and_never_more(
    sessions: sessionmaker[Session], placement: ThrowawayPlacement, gpu_server: FakeSysfs
) -> None:
    names = nodes(6, "together")
    for name in names:
        make_root(placement, name)
        store(sessions, name, hardware(gpu_server, name, (Kind.FPGA,)))
    loop = loop_for(sessions, placement, settings=settings(3))
    # The first three reports meet before any of them goes on: they are in flight at
    # once, or the barrier breaks (after a bounded wait) and they fail.
    barrier = threading.Barrier(3, timeout=DEADLINE / 2)
    met: list[str] = []

    def meet(name: str) -> None:
        if len(met) < 3:
            met.append(name)
            barrier.wait()

    watched = Watched(loop, meet)

    async def scenario() -> None:
        await until(reported(sessions, names), "every node reported")

    asyncio.run(running(loop, scenario))
    assert not barrier.broken
    assert watched.most_in_flight == 3  # each report makes one call at a time
    for name in names:
        assert node_row(sessions, name).last_error is None
        root = node_row(sessions, name).root_uuid
        assert root is not None and len(children(placement, root)) == 1


def test_a_node_that_hangs_or_fails_holds_only_its_own_slot(
    sessions: sessionmaker[Session], placement: ThrowawayPlacement, gpu_server: FakeSysfs
) -> None:
    stuck, *others = nodes(4, "alone")
    rootless = nodes(1, "rootless")[0]  # nova-compute never registered it
    for name in (stuck, *others):
        make_root(placement, name)
    hanging, release = threading.Event(), threading.Event()

    def hang(name: str) -> None:
        if name == stuck:
            hanging.set()
            release.wait(DEADLINE)

    loop = loop_for(sessions, placement, settings=settings(2))
    watched = Watched(loop, hang)
    store(sessions, stuck, hardware(gpu_server, stuck, (Kind.FPGA,)))

    async def scenario() -> None:
        await until(hanging.is_set, "the stuck node's report started")
        # Nodes that appear while it hangs are reported through the other slot.
        for name in (*others, rootless):
            await asyncio.to_thread(store, sessions, name, hardware(gpu_server, name))
        await until(reported(sessions, others), "the other nodes reported")
        await until(lambda: failed(sessions, rootless), "the rootless node's failure")
        assert node_row(sessions, stuck).pending and not release.is_set()
        release.set()
        await until(reported(sessions, [stuck]), "the stuck node reported once released")

    asyncio.run(running(loop, scenario))
    assert watched.most_in_flight <= 2
    row = node_row(sessions, rootless)
    assert row.pending and row.next_try_at is not None  # backing off, not holding a slot
    assert "no provider named" in (row.last_error or "")
    for name in (stuck, *others):
        assert node_row(sessions, name).last_error is None


def test_a_known_root_costs_one_call_and_a_root_no_longer_the_nodes_is_looked_up(
    sessions: sessionmaker[Session], placement: ThrowawayPlacement, gpu_server: FakeSysfs
) -> None:
    node = nodes(1, "known")[0]
    root = make_root(placement, node)
    store(sessions, node, hardware(gpu_server, node, (Kind.FPGA,)))
    loop = loop_for(sessions, placement)
    run_round(loop)
    assert node_row(sessions, node).root_uuid == root
    (child,) = children(placement, root).values()

    # A changed device: the tree (one call, the root as last found) and one write.
    with sessions.begin() as session:
        session.execute(
            update(Device).where(Device.hostname == node).values(status=DeviceStatus.MAINTAINING)
        )
    calls = loop.client.calls
    assert run_round(loop) == 1 and loop.client.calls - calls == 2
    assert children(placement, root)[f"{node}_0000:86:00.0"]["inventories"]["FPGA"]["reserved"]
    # A drift check that finds nothing changed: one call.
    checking = loop_for(sessions, placement, settings=dataclasses.replace(FAST, check_interval=0))
    assert run_round(checking) == 1 and checking.client.calls == 1

    # nova-compute made the node's root again (a new uuid): found by name, child made.
    with placement.client() as client:
        assert client.delete(f"/resource_providers/{child['uuid']}").status_code == 204
        assert client.delete(f"/resource_providers/{root}").status_code == 204
    remade = make_root(placement, node)
    run_round(checking)
    assert node_row(sessions, node).root_uuid == remade
    assert list(children(placement, remade)) == [f"{node}_0000:86:00.0"]
    assert not node_row(sessions, node).pending

    # The node is known by another name now: the old root still stands, but it is not
    # this node's; the root of the new name is the one reported against.
    fqdn = f"{node}.example.org"
    renamed = make_root(placement, fqdn)
    found = hardware(gpu_server, node, (Kind.FPGA,))
    store(sessions, node, found.model_copy(update={"resource_provider_name": fqdn}))
    run_round(checking)
    row = node_row(sessions, node)
    assert row.root_uuid == renamed
    # accel's provider is under the old root: never moved silently, an error to see.
    assert row.pending and f"not the node's {renamed}" in (row.last_error or "")


def test_a_change_noticed_while_its_node_is_reported_is_reported_next(
    sessions: sessionmaker[Session], placement: ThrowawayPlacement, gpu_server: FakeSysfs
) -> None:
    """The loop notices changes while reports run: a node changed in the middle of its
    own report was pending then, so noting it changed nothing; the report must not
    leave it as done with the tree from before."""
    node = nodes(1, "moving")[0]
    root = make_root(placement, node)
    store(sessions, node, hardware(gpu_server, node, (Kind.FPGA,)))
    # A free slot: the loop goes on noticing while this report runs.
    loop = loop_for(sessions, placement, settings=settings(2))
    noticed = threading.Event()

    def change_midway(name: str) -> None:
        if name != node or noticed.is_set():
            return
        before = loop._trees[node].digest
        with sessions.begin() as session:
            session.execute(
                update(Device)
                .where(Device.hostname == node)
                .values(status=DeviceStatus.MAINTAINING)
            )
        deadline = time.monotonic() + DEADLINE
        while loop._trees[node].digest == before:  # the loop's next notice, bounded
            assert time.monotonic() < deadline, "the loop never noticed the change"
            time.sleep(0.02)
        noticed.set()

    Watched(loop, change_midway)

    def reserved() -> bool:
        child = children(placement, root).get(f"{node}_0000:86:00.0")
        return child is not None and child["inventories"].get("FPGA", {}).get("reserved") == 1

    async def scenario() -> None:
        await until(noticed.is_set, "the change noticed during the report")
        await until(reserved, "the disabled device reserved in Placement")
        await until(reported(sessions, [node]), "the node reported")

    asyncio.run(running(loop, scenario))


@pytest.mark.postgres
def test_the_database_away_under_the_running_loop_stops_nothing_for_good(
    postgres: ThrowawayPostgres,
    placement: ThrowawayPlacement,
    gpu_server: FakeSysfs,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL stopped while the loop runs: its rounds fail and are tried again, the
    loop lives on, and once the database is back a change made then is reported."""
    node = nodes(1, "outage")[0]
    root = make_root(placement, node)
    url = postgres.new_database()
    with migrated_sessions(url) as sessions:
        store(sessions, node, hardware(gpu_server, node, (Kind.FPGA,)))
        loop = loop_for(sessions, placement, settings=settings(2))

        def round_failed() -> bool:
            return any("placement round failed" in r.getMessage() for r in caplog.records)

        def reserved() -> bool:
            child = children(placement, root).get(f"{node}_0000:86:00.0")
            return child is not None and child["inventories"].get("FPGA", {}).get("reserved") == 1

        async def scenario() -> None:
            await until(reported(sessions, [node]), "the first report")
            await asyncio.to_thread(postgres.stop)
            try:
                await until(round_failed, "a round failing on the stopped database")
            finally:
                await asyncio.to_thread(postgres.start)
            with sessions.begin() as session:
                session.execute(
                    update(Device)
                    .where(Device.hostname == node)
                    .values(status=DeviceStatus.MAINTAINING)
                )
            await until(reserved, "the change after the outage reported")

        with caplog.at_level(logging.WARNING, logger="accel.conductor.placement.loop"):
            asyncio.run(running(loop, scenario))
    # The loop, stopped, left no connection behind (tests/conductor/test_loop_stops.py).
    assert open_connections(url) == []
