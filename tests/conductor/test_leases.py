"""Sync leases and liveness sweeps with several conductors on one database.

Concurrent claims and sweeps run in threads against a real database (SQLite and
PostgreSQL); each conductor is just a name here, as it is in the database.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.agents import mark_silent_agents_down, record_hello, record_sync_failure
from accel.conductor.leases import (
    LeaseLost,
    claim_due_agents,
    release_all,
    renew_leases,
)
from accel.conductor.reconcile import store_inventory
from accel.db.models import Agent, Alarm
from accel.internal.schemas import HardwareList
from accel.states import AlarmState

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
LEASE = 10.0
Result = TypeVar("Result")


def hello_all(sessions: sessionmaker[Session], count: int, at: dt.datetime = T0) -> list[str]:
    names = [f"node-{i:03d}" for i in range(count)]
    for name in names:
        record_hello(sessions, name, f"127.0.0.1:{7000 + len(name)}", "1.3", at)
    return names


def owners(sessions: sessionmaker[Session]) -> dict[str, str | None]:
    with sessions() as session:
        return dict(session.execute(select(Agent.name, Agent.sync_owner)).all())


def at_once(calls: list[Callable[[], Result]]) -> list[Result]:
    """Runs the calls in threads that start together, so they really race."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Result]) -> Result:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_racing_conductors_each_claim_an_agent_at_most_once(
    sessions: sessionmaker[Session], database_url: str
) -> None:
    names = hello_all(sessions, 40)
    now = T0 + dt.timedelta(seconds=1)
    claims = at_once(
        [
            partial(claim_due_agents, sessions, owner, now, LEASE, 25)
            for owner in ("conductor-a", "conductor-b", "conductor-c")
        ]
    )
    claimed = [claim.name for batch in claims for claim in batch]
    assert len(claimed) == len(set(claimed))  # nobody synced by two conductors
    assert set(claimed) <= set(names)
    recorded = owners(sessions)
    for owner, batch in zip(("conductor-a", "conductor-b", "conductor-c"), claims, strict=True):
        assert all(recorded[claim.name] == owner for claim in batch)
    # Whatever was left unclaimed (a claimer that lost a race) is claimed next round.
    rest = claim_due_agents(sessions, "conductor-a", now, LEASE, 100)
    assert sorted(claimed + [claim.name for claim in rest]) == names


def test_a_held_lease_is_not_taken_until_it_expires(sessions: sessionmaker[Session]) -> None:
    hello_all(sessions, 1)
    now = T0 + dt.timedelta(seconds=1)
    assert [c.name for c in claim_due_agents(sessions, "a", now, LEASE, 10)] == ["node-000"]
    assert claim_due_agents(sessions, "b", now + dt.timedelta(seconds=LEASE - 1), LEASE, 10) == []

    later = now + dt.timedelta(seconds=LEASE + 1)  # a stopped renewing: it died
    taken = claim_due_agents(sessions, "b", later, LEASE, 10)
    assert [(c.name, c.taken_from) for c in taken] == [("node-000", "a")]
    assert renew_leases(sessions, "a", ["node-000"], later, LEASE) == set()
    assert renew_leases(sessions, "b", ["node-000"], later, LEASE) == {"node-000"}


def test_a_conductor_that_lost_its_lease_writes_nothing(sessions: sessionmaker[Session]) -> None:
    hello_all(sessions, 1)
    now = T0 + dt.timedelta(seconds=1)
    claim_due_agents(sessions, "a", now, LEASE, 10)
    later = now + dt.timedelta(seconds=LEASE + 1)
    claim_due_agents(sessions, "b", later, LEASE, 10)

    empty = HardwareList(hardware=[], drivers=[])
    with pytest.raises(LeaseLost):
        store_inventory(sessions, "node-000", empty, now, later, later, owner="a")
    with pytest.raises(LeaseLost):
        record_sync_failure(sessions, "node-000", "boom", now, later, owner="a")
    with sessions() as session:
        agent = session.scalars(select(Agent)).one()
        assert (agent.last_synced_at, agent.last_sync_error) == (None, None)
        assert agent.sync_owner == "b"

    store_inventory(sessions, "node-000", empty, later, later, later, owner="b")
    assert owners(sessions) == {"node-000": None}  # given back with the write


def test_a_restarted_conductor_gives_back_what_its_earlier_life_held(
    sessions: sessionmaker[Session],
) -> None:
    hello_all(sessions, 3)
    now = T0 + dt.timedelta(seconds=1)
    claim_due_agents(sessions, "a", now, LEASE, 2)
    claim_due_agents(sessions, "b", now, LEASE, 1)
    assert release_all(sessions, "a") == 2
    assert sorted(owners(sessions).values(), key=str) == [None, None, "b"]


def test_sweeps_by_several_conductors_raise_each_alarm_once(
    sessions: sessionmaker[Session],
) -> None:
    names = hello_all(sessions, 30)
    later = T0 + dt.timedelta(seconds=60)
    swept = at_once([(lambda: mark_silent_agents_down(sessions, later, 30.0)) for _ in range(4)])
    marked = Counter(name for batch in swept for name in batch)
    assert sorted(marked) == names
    assert set(marked.values()) == {1}  # each agent went DOWN in exactly one sweep
    with sessions() as session:
        kinds = Counter(
            session.scalars(select(Alarm.subject).where(Alarm.state == AlarmState.ACTIVE))
        )
    assert sorted(kinds) == names
    assert set(kinds.values()) == {1}
