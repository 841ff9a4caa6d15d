"""A sync that changes nothing writes nothing: no device rows, no inventory generation
(so the api's cached answers stay), and a change after it is still found."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.agents import record_hello
from accel.conductor.reconcile import store_inventory
from accel.db.generation import read_generation
from accel.driver.fake_sysfs import FakeSysfs
from accel.internal.schemas import Kind
from tests.conductor.test_reconcile import report
from tests.databases import migrated_sessions

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=1)


@pytest.fixture
def sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(sqlite_url) as sessions:
        yield sessions


def generation(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return read_generation(session)


def test_an_unchanged_sync_writes_no_inventory(
    sessions: sessionmaker[Session], gpu_server: FakeSysfs
) -> None:
    record_hello(sessions, "node1", "127.0.0.1:6671", "1.1", T0)
    found = report(gpu_server)
    first = store_inventory(sessions, "node1", found, T0, T0, T0)
    assert len(first.added) == len(found.hardware) > 0
    after_first = generation(sessions)
    assert after_first > 0

    again = store_inventory(sessions, "node1", found, T1, T1, T1)
    assert again.unchanged == len(found.hardware)
    assert not (again.added or again.changed or again.returned or again.vanished)
    assert generation(sessions) == after_first

    # A driver that failed vouches for nothing: its hardware stays, nothing changes.
    partial = report(gpu_server, failed=(Kind.GPU,))
    assert not store_inventory(sessions, "node1", partial, T1, T1, T1).vanished

    gpu_server.remove("0000:17:00.0")
    changed = store_inventory(sessions, "node1", report(gpu_server), T1, T1, T1)
    assert len(changed.vanished) == 1
    assert generation(sessions) == after_first + 1
