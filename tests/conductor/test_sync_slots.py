"""A conductor whose sync slots are all busy starts the next due agent's sync as soon
as a slot frees, not at its next idle poll: a fleet coming up waits on the slots."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor import syncing
from accel.conductor.agents import Hello, record_hellos
from accel.conductor.device_diff import InventoryDiff
from accel.conductor.reconcile import FinishedSync, store_inventories
from accel.conductor.service import ConductorSettings
from accel.conductor.syncing import SyncLoop
from accel.db.columns import utcnow
from accel.db.group_commit import GroupCommit
from accel.db.models import Agent, Device
from accel.internal.client import Discovery, InternalClient
from accel.internal.schemas import HardwareList
from accel.internal.versions import VersionRange
from tests.conductor.test_batched_syncs import node_report

NODES = ("node1", "node2", "node3")


class RecordingAgents:
    """Stands in for the network: each agent's discovery is the one its fake tree gives."""

    def __init__(self, reports: dict[str, HardwareList]) -> None:
        self.reports = reports
        self.asked: list[str] = []

    async def discover_if_changed(
        self, peer: str, wait: float, etag: str | None = None
    ) -> Discovery:
        self.asked.append(peer)
        await asyncio.sleep(0)  # answered later, as over a socket
        return Discovery(self.reports[peer], f'"{peer}"')


async def synced_names(sessions: sessionmaker[Session]) -> set[str]:
    def read() -> set[str]:
        with sessions() as session:
            return set(session.scalars(select(Agent.name).where(Agent.last_synced_at.is_not(None))))

    return await asyncio.to_thread(read)


def synced_with_one_slot(
    sessions: sessionmaker[Session],
    tmp_path: Path,
    store: Callable[[], GroupCommit[FinishedSync, InventoryDiff]] | None = None,
) -> RecordingAgents:
    """NODES, due for their first sync, synced by a loop with one sync slot (and the
    inventory writer ``store`` makes, if given); the agents, as they were asked."""
    now = utcnow()
    endpoints = {node: f"127.0.0.1:{7001 + i}" for i, node in enumerate(NODES)}
    record_hellos(sessions, [Hello(node, endpoints[node], "1.5", now) for node in NODES])
    agents = RecordingAgents(
        {endpoints[node]: node_report(tmp_path / node, node) for node in NODES}
    )
    settings = ConductorSettings(
        name="conductor-1",
        endpoint="127.0.0.1:6670",
        token="t" * 32,
        versions=VersionRange(),
        max_concurrent_syncs=1,
    )

    async def run() -> set[str]:
        loop = SyncLoop(settings, sessions, lambda: cast(InternalClient, agents), asyncio.Event())
        if store is not None:
            await loop.store.aclose()
            loop.store = store()
        task = asyncio.create_task(loop.run())
        try:
            async with asyncio.timeout(60):
                while (synced := await synced_names(sessions)) != set(NODES):
                    assert not task.done(), task
                    await asyncio.sleep(0.05)
            return synced
        finally:
            task.cancel()
            await loop.stop()

    assert asyncio.run(run()) == set(NODES)
    return agents


def test_a_freed_slot_claims_the_next_due_agent_without_waiting_for_a_poll(
    sessions: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were the loop to wait for its poll, the second agent would wait an hour.
    monkeypatch.setattr(syncing, "POLL_SECONDS", 3600.0)
    agents = synced_with_one_slot(sessions, tmp_path)
    # Each agent was asked once, and all its hardware stored.
    assert sorted(agents.asked) == sorted(agents.reports)
    with sessions() as session:
        assert len(session.scalars(select(Device)).all()) == 30


def test_a_report_waiting_for_its_batch_holds_no_slot(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """With one slot, the next agent is called while the last one's report waits to
    be written with others: the slot bounds the agents called at once, not the
    reports waiting for a transaction."""

    def three_at_once() -> GroupCommit[FinishedSync, InventoryDiff]:
        # Nothing is written until all three reports wait together: were a waiting
        # report to hold the only slot, the second agent would never be called.
        return GroupCommit(
            "inventory",
            lambda syncs: store_inventories(sessions, syncs),
            max_batch=len(NODES),
            linger=3600.0,
        )

    agents = synced_with_one_slot(sessions, tmp_path, three_at_once)
    assert sorted(agents.asked) == sorted(agents.reports)
