"""Conductors' records: each refreshes its own, and a name is held by the conductor
that vouched to be alive at another endpoint until then."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.presence import live_holder, record_conductor
from accel.db.conductor_liveness import LIVE_WITHIN
from accel.db.models import Conductor

T0 = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
A = "127.0.0.1:7100"
B = "127.0.0.1:7200"


def record(sessions: sessionmaker[Session], name: str = "c1") -> Conductor:
    with sessions() as session:
        found = session.scalar(select(Conductor).where(Conductor.name == name))
    assert found is not None
    return found


def test_a_conductor_is_recorded_once_and_refreshed_after(
    sessions: sessionmaker[Session],
) -> None:
    record_conductor(sessions, "c1", A, T0, starting=True)
    later = T0 + dt.timedelta(seconds=10)
    record_conductor(sessions, "c1", B, later, alive_until=later + dt.timedelta(seconds=30))
    found = record(sessions)
    assert (found.endpoint, found.started_at, found.last_seen) == (B, T0, later)
    assert found.alive_until == later + dt.timedelta(seconds=30)
    with sessions() as session:
        assert len(session.scalars(select(Conductor.id)).all()) == 1


def test_a_restart_under_the_same_name_is_a_new_start(sessions: sessionmaker[Session]) -> None:
    record_conductor(sessions, "c1", A, T0, starting=True)
    again = T0 + dt.timedelta(minutes=5)
    record_conductor(sessions, "c1", A, again, starting=True)
    assert record(sessions).started_at == again


def test_a_name_alive_at_another_endpoint_is_held_there_until_its_vouch_runs_out(
    sessions: sessionmaker[Session],
) -> None:
    until = T0 + dt.timedelta(seconds=30)
    record_conductor(sessions, "c1", A, T0, alive_until=until)
    assert live_holder(sessions, "c1", B, T0) == A
    assert live_holder(sessions, "c1", B, until) == A
    assert live_holder(sessions, "c1", B, until + dt.timedelta(microseconds=1)) is None


def test_a_record_without_a_vouch_lives_a_minute_from_its_last_report(
    sessions: sessionmaker[Session],
) -> None:
    record_conductor(sessions, "c1", A, T0)  # as a release before alive_until wrote it
    assert live_holder(sessions, "c1", B, T0 + LIVE_WITHIN) == A
    assert live_holder(sessions, "c1", B, T0 + LIVE_WITHIN + dt.timedelta(microseconds=1)) is None


def test_nobody_holds_a_new_name_or_ones_own(sessions: sessionmaker[Session]) -> None:
    assert live_holder(sessions, "c1", A, T0) is None
    record_conductor(sessions, "c1", A, T0, alive_until=T0 + dt.timedelta(hours=1))
    assert live_holder(sessions, "c1", A, T0) is None
    assert live_holder(sessions, "c2", B, T0) is None
