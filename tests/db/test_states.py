"""The domain states keep their wire values: what the database stores and the APIs
send are Cyborg's strings (and accel's published ones), whatever the members are named.

The other tests compare with the enum members, so they would follow a changed value;
these spell each value out, so a changed one fails here.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError

from accel.db.engine import make_engine, migrate, session_factory
from accel.db.models import Agent, Alarm
from accel.states import (
    ARQ_BIND_OUTCOMES,
    ARQ_HOLDING_NOTHING,
    ARQ_RESOLVED,
    OPERATION_FINAL,
    OPERATION_UNFINISHED,
    AgentState,
    AlarmKind,
    AlarmState,
    ArqState,
    CheckSeverity,
    DeviceStatus,
    HealthState,
    NovaEventState,
    OperationState,
)

T0 = dt.datetime(2026, 12, 6, 8, 0, 0, tzinfo=dt.UTC)


def test_every_state_keeps_its_wire_value() -> None:
    assert [state.value for state in ArqState] == [
        "Initial",
        "BindStarted",
        "Bound",
        "BindFailed",
        "Unbound",
        "Deleting",
    ]
    assert [state.value for state in OperationState] == ["PENDING", "RUNNING", "DONE", "FAILED"]
    assert [state.value for state in AgentState] == ["UP", "DOWN"]
    assert [state.value for state in DeviceStatus] == ["enabled", "maintaining"]
    assert [state.value for state in AlarmState] == ["active", "cleared"]
    assert [kind.value for kind in AlarmKind] == [
        "agent_down",
        "hardware_vanished",
        "allocated_hardware_vanished",
        "hardware_uuid_clash",
        "agent_name_clash",
        "hardware_unhealthy",
        "placement_root_missing",
        "placement_provider_in_use",
        "health_brake",
    ]
    assert [state.value for state in HealthState] == ["ok", "degraded", "failed", "unknown"]
    assert [severity.value for severity in CheckSeverity] == ["ok", "degraded", "failed"]


def test_the_named_sets_of_states() -> None:
    assert ARQ_HOLDING_NOTHING == ("Initial", "Unbound")
    assert ARQ_BIND_OUTCOMES == ("Bound", "BindFailed")
    # Cyborg's bind_state=resolved, which Nova polls for.
    assert ARQ_RESOLVED == ("Bound", "BindFailed", "Deleting")
    assert OPERATION_UNFINISHED == ("PENDING", "RUNNING")
    assert OPERATION_FINAL == ("DONE", "FAILED")
    assert set(OPERATION_UNFINISHED) | set(OPERATION_FINAL) == set(OperationState)


def test_rows_store_the_value_and_read_back_the_member(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        sessions = session_factory(engine)
        with sessions.begin() as session:
            session.add(Agent(name="n1", endpoint="x:1", state=AgentState.DOWN, last_seen=T0))
            session.add(Alarm(kind=AlarmKind.AGENT_DOWN, subject="n1", raised_at=T0, message="m"))
        with engine.connect() as connection:
            assert connection.execute(text("SELECT state FROM agents")).one() == ("DOWN",)
            stored = connection.execute(text("SELECT kind, state FROM alarms")).one()
            assert tuple(stored) == ("agent_down", "active")
        with sessions() as session:
            agent = session.scalars(select(Agent)).one()
            alarm = session.scalars(select(Alarm)).one()
            assert type(agent.state) is AgentState and agent.state is AgentState.DOWN
            assert (alarm.kind, alarm.state) == (AlarmKind.AGENT_DOWN, AlarmState.ACTIVE)
            assert type(alarm.state) is AlarmState
    finally:
        engine.dispose()


def test_a_state_this_release_does_not_know_reads_back_as_its_text(database_url: str) -> None:
    """As a newer conductor may store it while older apis still read the table."""
    engine = make_engine(database_url)
    try:
        migrate(engine)
        sessions = session_factory(engine)
        with sessions.begin() as session:
            session.add(Alarm(kind=AlarmKind.AGENT_DOWN, subject="n1", raised_at=T0, message="m"))
        with engine.begin() as connection:
            connection.execute(text("UPDATE alarms SET kind = 'fan_failed', state = 'muted'"))
        with sessions() as session:
            alarm = session.scalars(select(Alarm)).one()
            assert (alarm.kind, alarm.state) == ("fan_failed", "muted")
            assert type(alarm.kind) is str
    finally:
        engine.dispose()


def test_a_state_not_of_its_enum_is_not_written(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        sessions = session_factory(engine)
        refused = pytest.raises(StatementError, match="'Bound' is not a valid AgentState")
        with refused, sessions.begin() as session:
            session.add(Agent(name="n1", endpoint="x:1", state="Bound", last_seen=T0))
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM agents")).scalar() == 0
    finally:
        engine.dispose()


def test_nova_event_states_keep_their_stored_values() -> None:
    assert [state.value for state in NovaEventState] == ["pending", "sent", "failed"]
