"""Raising and clearing alarms, each at most once however many conductors try.

A partial unique index allows one active alarm per (kind, subject); raising inside a
savepoint turns a lost race with another conductor into a no-op.

The times callers pass were read before their transaction ran (a hello's when it
came, a sweep's before it waited for the database's lock), and several conductors
write: a clear may carry an earlier time than the raise it clears. An alarm is never
cleared before it was raised: ``cleared_at`` is the later of the two, in SQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import TypeVar

from sqlalchemy import ColumnElement, case, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from accel.db.columns import UtcDateTime
from accel.db.models import AcceleratorRequest, Alarm, Deployable, Device
from accel.metrics import ALARMS_RAISED
from accel.states import AlarmKind, AlarmState, ArqState

# Subjects per IN (...): well under every backend's limit on bound parameters.
CHUNK = 500
Item = TypeVar("Item")


def chunks(items: Sequence[Item], size: int = CHUNK) -> Iterator[Sequence[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def raise_alarm(
    session: Session, kind: AlarmKind, subject: str, message: str, now: dt.datetime
) -> bool:
    """Raises an alarm unless one is active already; True if this call raised it."""
    active = session.scalar(
        select(Alarm.id).where(
            Alarm.kind == kind, Alarm.subject == subject, Alarm.state == AlarmState.ACTIVE
        )
    )
    if active is not None:
        return False
    try:
        with session.begin_nested():
            session.add(
                Alarm(
                    kind=kind,
                    subject=subject,
                    state=AlarmState.ACTIVE,
                    raised_at=now,
                    message=message,
                )
            )
    except IntegrityError:
        return False
    ALARMS_RAISED.labels(kind).inc()
    return True


def raise_alarms(
    session: Session, kind: AlarmKind, messages: Mapping[str, str], now: dt.datetime
) -> list[str]:
    """Raises an alarm of ``kind`` per subject of ``messages`` that has no active one,
    in one INSERT; the subjects raised.

    A node whose thousand devices vanish at once costs one statement, not a thousand
    savepoints: the transaction that holds the database's write lock stays short.
    """
    subjects = sorted(messages)
    active: set[str] = set()
    for chunk in chunks(subjects):
        active.update(
            session.scalars(
                select(Alarm.subject).where(
                    Alarm.kind == kind,
                    Alarm.subject.in_(chunk),
                    Alarm.state == AlarmState.ACTIVE,
                )
            )
        )
    new = [subject for subject in subjects if subject not in active]
    if not new:
        return []
    rows = [
        {
            "kind": kind,
            "subject": s,
            "state": AlarmState.ACTIVE,
            "raised_at": now,
            "message": messages[s],
        }
        for s in new
    ]
    try:
        with session.begin_nested():
            session.execute(insert(Alarm), rows)
    except IntegrityError:
        # Another conductor raised some of them meanwhile: each on its own, then.
        return [s for s in new if raise_alarm(session, kind, s, messages[s], now)]
    ALARMS_RAISED.labels(kind).inc(len(new))
    return new


def clear_alarms(
    session: Session, kind: AlarmKind, subjects: Collection[str], now: dt.datetime
) -> None:
    """Clears the active alarms of ``kind`` for ``subjects``, a few statements in all."""
    for chunk in chunks(sorted(subjects)):
        session.execute(
            update(Alarm)
            .where(Alarm.kind == kind, Alarm.subject.in_(chunk), Alarm.state == AlarmState.ACTIVE)
            .values(state=AlarmState.CLEARED, cleared_at=_cleared_at(now))
            .execution_options(synchronize_session=False)
        )


def clear_alarm(session: Session, kind: AlarmKind, subject: str, now: dt.datetime) -> bool:
    """Clears the active alarm of this kind and subject; True if there was one."""
    result = session.execute(
        update(Alarm)
        .where(Alarm.kind == kind, Alarm.subject == subject, Alarm.state == AlarmState.ACTIVE)
        .values(state=AlarmState.CLEARED, cleared_at=_cleared_at(now))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _cleared_at(now: dt.datetime) -> ColumnElement[dt.datetime]:
    """The later of ``now`` and the alarm's own ``raised_at`` (see the module's docstring)."""
    return case(
        (Alarm.raised_at > literal(now, UtcDateTime), Alarm.raised_at),
        else_=literal(now, UtcDateTime),
    )


def allocation_holders(session: Session, devices: Sequence[Device]) -> list[str]:
    """The uuids of the accelerator requests bound to these devices' accelerators."""
    found: list[str] = []
    for chunk in chunks(sorted(device.id for device in devices)):
        found.extend(
            session.scalars(
                select(AcceleratorRequest.uuid)
                .join(Deployable, AcceleratorRequest.deployable_id == Deployable.id)
                .where(Deployable.device_id.in_(chunk), AcceleratorRequest.state == ArqState.BOUND)
            )
        )
    return found


def alarm_allocation_holders(session: Session, devices: Sequence[Device], now: dt.datetime) -> None:
    """Accelerators that vanished while allocated: each holder gets an alarm by name."""
    by_id = {device.id: device for device in devices}
    holders: dict[str, str] = {}
    for chunk in chunks(sorted(by_id)):
        rows = session.execute(
            select(AcceleratorRequest, Deployable.device_id)
            .join(Deployable, AcceleratorRequest.deployable_id == Deployable.id)
            .where(Deployable.device_id.in_(chunk), AcceleratorRequest.state == ArqState.BOUND)
        )
        for arq, device_id in rows:
            device = by_id[device_id]
            holders[arq.uuid] = (
                f"accelerator request {arq.uuid} of instance {arq.instance_uuid} is bound "
                f"to {device.type} {device.pci_address or device.uuid} on "
                f"{device.hostname}, which vanished"
            )
    raise_alarms(session, AlarmKind.ALLOCATED_HARDWARE_VANISHED, holders, now)
