"""Alarms: one active alarm per kind and subject, raised once and cleared once, in
bulk as one by one, and an alarm by name for each request whose accelerator vanished.

When an alarm is cleared relative to when it was raised is test_alarm_times.py's.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor import allocation
from accel.conductor.alarms import (
    CHUNK,
    alarm_allocation_holders,
    allocation_holders,
    clear_alarm,
    clear_alarms,
    raise_alarm,
    raise_alarms,
)
from accel.db.engine import make_engine, session_factory
from accel.db.models import AcceleratorRequest, Alarm, Deployable, Device, DeviceProfile
from accel.driver.fake_sysfs import FakeSysfs
from accel.internal.arq_schemas import ArqChanges
from accel.states import AlarmKind, AlarmState
from tests.api.test_api import fill

T0 = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
LATER = T0 + dt.timedelta(minutes=1)


def active(sessions: sessionmaker[Session], kind: str) -> dict[str, str]:
    """The active alarms of ``kind``: subject -> message."""
    with sessions() as session:
        rows = session.execute(
            select(Alarm.subject, Alarm.message).where(
                Alarm.kind == kind, Alarm.state == AlarmState.ACTIVE
            )
        )
        return {subject: message for subject, message in rows}


def count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return len(session.scalars(select(Alarm.id)).all())


def test_an_alarm_is_raised_once_while_it_is_active(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        assert raise_alarm(session, AlarmKind.AGENT_DOWN, "node1", "silent for 30s", T0)
        assert not raise_alarm(session, AlarmKind.AGENT_DOWN, "node1", "silent again", LATER)
        # Another kind, or another subject, is another alarm.
        assert raise_alarm(session, AlarmKind.HARDWARE_VANISHED, "node1", "gone", T0)
        assert raise_alarm(session, AlarmKind.AGENT_DOWN, "node2", "silent", T0)
    assert active(sessions, AlarmKind.AGENT_DOWN) == {"node1": "silent for 30s", "node2": "silent"}


def test_a_cleared_alarm_may_be_raised_again_as_a_new_one(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        raise_alarm(session, AlarmKind.AGENT_DOWN, "node1", "first", T0)
    with sessions.begin() as session:
        assert clear_alarm(session, AlarmKind.AGENT_DOWN, "node1", LATER)
        assert not clear_alarm(session, AlarmKind.AGENT_DOWN, "node1", LATER)
    with sessions.begin() as session:
        assert raise_alarm(session, AlarmKind.AGENT_DOWN, "node1", "second", LATER)
    assert active(sessions, AlarmKind.AGENT_DOWN) == {"node1": "second"}
    with sessions() as session:
        states = session.scalars(select(Alarm.state).order_by(Alarm.id)).all()
    assert states == [AlarmState.CLEARED, AlarmState.ACTIVE]


def test_clearing_what_was_never_raised_changes_nothing(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        assert not clear_alarm(session, AlarmKind.AGENT_DOWN, "node1", T0)
        clear_alarms(session, AlarmKind.AGENT_DOWN, ["node1", "node2"], T0)
    assert count(sessions) == 0


def test_raising_in_bulk_raises_only_the_subjects_without_an_active_alarm(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        raise_alarm(session, AlarmKind.HARDWARE_VANISHED, "b", "already", T0)
    with sessions.begin() as session:
        raised = raise_alarms(
            session, AlarmKind.HARDWARE_VANISHED, {"c": "gone", "a": "gone", "b": "x"}, T0
        )
    assert raised == ["a", "c"]
    assert active(sessions, AlarmKind.HARDWARE_VANISHED) == {
        "a": "gone",
        "b": "already",
        "c": "gone",
    }
    with sessions.begin() as session:
        assert raise_alarms(session, AlarmKind.HARDWARE_VANISHED, {"a": "again"}, LATER) == []
        assert raise_alarms(session, AlarmKind.HARDWARE_VANISHED, {}, LATER) == []


def test_clearing_in_bulk_clears_only_the_named_subjects_of_that_kind(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        raise_alarms(
            session, AlarmKind.HARDWARE_VANISHED, {"a": "gone", "b": "gone", "c": "gone"}, T0
        )
        raise_alarm(session, AlarmKind.AGENT_DOWN, "a", "silent", T0)
    with sessions.begin() as session:
        clear_alarms(session, AlarmKind.HARDWARE_VANISHED, {"a", "c", "z"}, LATER)
    assert active(sessions, AlarmKind.HARDWARE_VANISHED) == {"b": "gone"}
    assert active(sessions, AlarmKind.AGENT_DOWN) == {"a": "silent"}


def test_more_subjects_than_one_statement_takes_are_raised_and_cleared(
    sessions: sessionmaker[Session],
) -> None:
    subjects = {f"device-{n:05}": "gone" for n in range(2 * CHUNK + 7)}
    with sessions.begin() as session:
        assert len(raise_alarms(session, AlarmKind.HARDWARE_VANISHED, subjects, T0)) == len(
            subjects
        )
    with sessions.begin() as session:
        assert raise_alarms(session, AlarmKind.HARDWARE_VANISHED, subjects, LATER) == []
        clear_alarms(session, AlarmKind.HARDWARE_VANISHED, list(subjects), LATER)
    assert active(sessions, AlarmKind.HARDWARE_VANISHED) == {}


def test_each_request_bound_to_vanished_hardware_gets_an_alarm_by_name(
    database_url: str, gpu_server: FakeSysfs
) -> None:
    fill(database_url, gpu_server)
    engine = make_engine(database_url)
    sessions = session_factory(engine)
    try:
        with sessions.begin() as session:
            profile = DeviceProfile(
                name="qat",
                profile_json=json.dumps({"groups": [{"resources:CUSTOM_QAT": "1"}]}),
                created_at=T0,
            )
            session.add_all(
                AcceleratorRequest(device_profile=profile, device_profile_group_id=0)
                for _ in range(3)
            )
        with sessions() as session:
            bound, other, idle = session.scalars(select(AcceleratorRequest.uuid)).all()
            rp, rp2 = (
                session.scalar(select(Deployable.rp_uuid).where(Deployable.name == name))
                for name in ("node1_0000:6b:00.1", "node1_0000:6b:00.2")
            )
        instance = str(uuid.uuid4())
        binds = [
            {"arq_uuid": arq, "hostname": "node1", "device_rp_uuid": at, "instance_uuid": i}
            for arq, at, i in ((bound, rp, instance), (other, rp2, str(uuid.uuid4())))
        ]
        allocation.apply_changes(sessions, ArqChanges.model_validate({"bind": binds}), T0)

        with sessions.begin() as session:
            session.execute(
                update(Device).where(Device.pci_address == "0000:6b:00.0").values(present=False)
            )
            qat = session.scalars(select(Device).where(Device.pci_address == "0000:6b:00.0")).all()
            gpu = session.scalars(select(Device).where(Device.pci_address == "0000:17:00.0")).all()
            assert sorted(allocation_holders(session, qat)) == sorted([bound, other])
            assert allocation_holders(session, gpu) == []
            alarm_allocation_holders(session, qat, T0)
            alarm_allocation_holders(session, qat, LATER)  # raised once
        alarms = active(sessions, AlarmKind.ALLOCATED_HARDWARE_VANISHED)
        assert sorted(alarms) == sorted([bound, other])
        assert alarms[bound] == (
            f"accelerator request {bound} of instance {instance} is bound to QAT "
            "0000:6b:00.0 on node1, which vanished"
        )
        assert idle not in alarms
    finally:
        engine.dispose()
