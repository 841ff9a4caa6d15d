"""Hellos that carry the node's hardware ETag (internal version 1.5): the same as the
stored report's counts as a resync that found nothing; another asks for a sync now."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.agents import (
    Hello,
    HelloOutcome,
    _Seen,
    _write_seen,
    mark_silent_agents_down,
    record_hello,
    record_hellos,
)
from accel.conductor.reconcile import FinishedSync, store_inventories
from accel.conductor.sync_schedule import SyncSchedule
from accel.db.models import Agent, Alarm
from accel.internal.schemas import DriverOutcome, Kind
from accel.states import AgentState, AlarmState
from tests.conductor.test_batched_syncs import node_report

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
SYNCED = T0 + dt.timedelta(seconds=5)
NEXT_RESYNC = SYNCED + dt.timedelta(minutes=1)
HELLO = T0 + dt.timedelta(seconds=30)
SCHEDULE = SyncSchedule(heartbeat=10.0, resync=590.0)
CONFIRMED_FOR = 600.0  # rule 3: a resync interval plus a heartbeat interval


def stored_with_etag(
    sessions: sessionmaker[Session], tmp_path: Path, etag: str, complete: bool = True
) -> None:
    record_hello(sessions, "node1", "127.0.0.1:6671", "1.5", T0)
    report = node_report(tmp_path / "node", "node1")
    if not complete:  # a driver failed: the report is partial and its ETag not kept
        report.drivers = [DriverOutcome(type=Kind.GPU, endpoint="x:1", state="failed")]
    store_inventories(sessions, [FinishedSync("node1", report, T0, SYNCED, NEXT_RESYNC, etag=etag)])


def hello(sessions: sessionmaker[Session], etag: str | None, resync: bool = False) -> HelloOutcome:
    return record_hello(
        sessions,
        "node1",
        "127.0.0.1:6671",
        "1.5",
        HELLO,
        resync=resync,
        inventory_etag=etag,
        schedule=SCHEDULE,
    )


def sync_times(sessions: sessionmaker[Session]) -> tuple[dt.datetime | None, dt.datetime | None]:
    with sessions() as session:
        agent = session.scalars(select(Agent)).one()
        return agent.last_synced_at, agent.next_sync_at


def failed_sync(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        session.scalars(select(Agent)).one().last_sync_error = "the agent timed out"


def last_error(sessions: sessionmaker[Session]) -> str | None:
    with sessions() as session:
        return session.scalars(select(Agent.last_sync_error)).one()


def test_the_stored_etag_confirms_the_inventory_and_moves_the_resync_on(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    stored_with_etag(sessions, tmp_path, '"a"')
    failed_sync(sessions)  # a later sync timed out: the inventory was kept as it was
    assert hello(sessions, '"a"') == HelloOutcome(known=True, sync_now=False)
    assert sync_times(sessions) == (HELLO, HELLO + dt.timedelta(seconds=CONFIRMED_FOR))
    assert last_error(sessions) is None  # what is stored is what the node has


def test_another_etag_asks_for_a_sync_now(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    stored_with_etag(sessions, tmp_path, '"a"')
    failed_sync(sessions)
    assert hello(sessions, '"b"') == HelloOutcome(known=True, sync_now=True)
    assert sync_times(sessions) == (SYNCED, HELLO)
    assert last_error(sessions) == "the agent timed out"


def test_no_stored_etag_or_none_sent_leaves_the_periodic_resync_alone(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    stored_with_etag(sessions, tmp_path, '"a"', complete=False)
    assert hello(sessions, '"a"') == HelloOutcome(known=True, sync_now=False)
    assert sync_times(sessions) == (SYNCED, NEXT_RESYNC)
    assert hello(sessions, None) == HelloOutcome(known=True, sync_now=False)
    assert sync_times(sessions) == (SYNCED, NEXT_RESYNC)


def test_a_resync_asked_for_wins_over_a_matching_etag(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    stored_with_etag(sessions, tmp_path, '"a"')
    assert hello(sessions, '"a"', resync=True) == HelloOutcome(known=True, sync_now=True)
    assert sync_times(sessions) == (SYNCED, HELLO)


def test_a_confirmation_never_brings_the_periodic_resync_closer(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    stored_with_etag(sessions, tmp_path, '"a"')
    far = HELLO + dt.timedelta(seconds=CONFIRMED_FOR * 3)
    with sessions.begin() as session:
        session.scalars(select(Agent)).one().next_sync_at = far
    hello(sessions, '"a"')
    assert sync_times(sessions) == (HELLO, far)


def test_an_agent_back_from_down_is_synced_whatever_its_etag(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    stored_with_etag(sessions, tmp_path, '"a"')
    assert mark_silent_agents_down(sessions, HELLO, down_after=1) == ["node1"]
    assert hello(sessions, '"a"') == HelloOutcome(known=True, sync_now=True)
    assert sync_times(sessions) == (SYNCED, HELLO)
    with sessions() as session:
        assert session.scalars(select(Agent.state)).one() == AgentState.UP
        assert session.scalars(select(Alarm.state)).one() == AlarmState.CLEARED


def test_a_sync_asked_for_in_a_batch_is_not_undone_by_a_later_hello(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    stored_with_etag(sessions, tmp_path, '"a"')
    asking = Hello("node1", "127.0.0.1:6671", "1.5", HELLO, resync=True)
    later = Hello("node1", "127.0.0.1:6671", "1.5", HELLO, inventory_etag='"a"')
    record_hellos(sessions, [asking, later], schedule=SCHEDULE)
    assert sync_times(sessions) == (SYNCED, HELLO)


def test_a_confirmation_read_before_a_newer_sync_was_stored_changes_nothing(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # SQLite reads a hello batch's rows outside its transaction: the stored ETag may
    # have changed (a sync stored, a setup dropped it) between the read and the write.
    stored_with_etag(sessions, tmp_path, '"a"')
    with sessions.begin() as session:
        agent = session.scalars(select(Agent)).one()
        seen = _Seen(agent.id, agent.name, agent.state, agent.endpoint, agent.inventory_etag)
        agent.inventory_etag = '"b"'
    seen.last_seen, seen.confirmed_etag = HELLO, '"a"'
    with sessions.begin() as session:
        _write_seen(session, [seen], SCHEDULE.confirmed_for)
    assert sync_times(sessions) == (SYNCED, NEXT_RESYNC)
