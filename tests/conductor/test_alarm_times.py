"""An alarm is never cleared before it was raised, whatever times its writers carry.

Hellos are stamped when they come and written a batch later; a sweep is stamped
before it waits for the database. So a hello that came just before a sweep, and was
written just after it, clears the sweep's alarm with an earlier time than it was
raised at (seen under load). The stored ``cleared_at`` is never the earlier one.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor import agents
from accel.conductor.alarms import clear_alarm, clear_alarms, raise_alarm, raise_alarms
from accel.db.models import Alarm
from accel.states import AlarmKind, AlarmState

T0 = dt.datetime(2026, 12, 6, 5, 0, 0, tzinfo=dt.UTC)


def stored_alarms(sessions: sessionmaker[Session]) -> list[Alarm]:
    with sessions() as session:
        return list(session.scalars(select(Alarm).order_by(Alarm.id)))


def test_a_clear_stamped_before_the_raise_is_stored_at_the_raise(
    sessions: sessionmaker[Session],
) -> None:
    raised = T0 + dt.timedelta(seconds=5)
    with sessions.begin() as session:
        assert raise_alarm(session, AlarmKind.AGENT_DOWN, "node1", "silent", raised)
    with sessions.begin() as session:
        assert clear_alarm(session, AlarmKind.AGENT_DOWN, "node1", raised - dt.timedelta(seconds=2))
    [alarm] = stored_alarms(sessions)
    assert alarm.state == AlarmState.CLEARED
    assert alarm.cleared_at == alarm.raised_at == raised


def test_a_later_clear_keeps_its_own_time(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        raise_alarm(session, AlarmKind.AGENT_DOWN, "node1", "silent", T0)
    with sessions.begin() as session:
        clear_alarm(session, AlarmKind.AGENT_DOWN, "node1", T0 + dt.timedelta(seconds=3))
    [alarm] = stored_alarms(sessions)
    assert alarm.cleared_at == T0 + dt.timedelta(seconds=3)


def test_a_hello_written_after_the_sweep_that_came_before_it(
    sessions: sessionmaker[Session],
) -> None:
    agents.record_hello(sessions, "node1", "127.0.0.1:7001", "1.5", T0)
    came = T0 + dt.timedelta(seconds=40)  # the hello comes, and waits for its batch
    swept = came + dt.timedelta(seconds=0.2)  # meanwhile the sweep runs first
    assert agents.mark_silent_agents_down(sessions, swept, 30.0) == ["node1"]
    assert agents.record_hello(sessions, "node1", "127.0.0.1:7001", "1.5", came).sync_now
    [alarm] = stored_alarms(sessions)
    assert alarm.state == AlarmState.CLEARED
    assert alarm.cleared_at is not None and alarm.cleared_at >= alarm.raised_at


def test_a_bulk_clear_stamped_before_the_raise_is_stored_at_the_raise(
    sessions: sessionmaker[Session],
) -> None:
    """Vanished hardware that returns, and clashes that end, are cleared in bulk."""
    raised = T0 + dt.timedelta(seconds=5)
    with sessions.begin() as session:
        raise_alarms(session, AlarmKind.HARDWARE_VANISHED, {"a": "gone", "b": "gone"}, raised)
    with sessions.begin() as session:
        clear_alarms(
            session, AlarmKind.HARDWARE_VANISHED, ["a", "b"], raised - dt.timedelta(seconds=2)
        )
    for alarm in stored_alarms(sessions):
        assert alarm.state == AlarmState.CLEARED
        assert alarm.cleared_at == alarm.raised_at == raised
