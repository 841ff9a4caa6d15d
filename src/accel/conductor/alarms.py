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

from sqlalchemy import case, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from accel.db.models import AcceleratorRequest, Alarm, Deployable, Device, UtcDateTime
from accel.metrics import ALARMS_RAISED

AGENT_DOWN = "agent_down"
HARDWARE_VANISHED = "hardware_vanished"
# Subject: the accelerator request whose accelerator vanished under it.
ALLOCATED_HARDWARE_VANISHED = "allocated_hardware_vanished"


def raise_alarm(session: Session, kind: str, subject: str, message: str, now: dt.datetime) -> bool:
    """Raises an alarm unless one is active already; True if this call raised it."""
    active = session.scalar(
        select(Alarm.id).where(
            Alarm.kind == kind, Alarm.subject == subject, Alarm.state == "active"
        )
    )
    if active is not None:
        return False
    try:
        with session.begin_nested():
            session.add(
                Alarm(kind=kind, subject=subject, state="active", raised_at=now, message=message)
            )
    except IntegrityError:
        return False
    ALARMS_RAISED.labels(kind).inc()
    return True


def clear_alarm(session: Session, kind: str, subject: str, now: dt.datetime) -> bool:
    """Clears the active alarm of this kind and subject; True if there was one."""
    result = session.execute(
        update(Alarm)
        .where(Alarm.kind == kind, Alarm.subject == subject, Alarm.state == "active")
        .values(
            state="cleared",
            cleared_at=case(
                (Alarm.raised_at > literal(now, UtcDateTime), Alarm.raised_at),
                else_=literal(now, UtcDateTime),
            ),
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def allocation_holders(session: Session, device: Device) -> list[AcceleratorRequest]:
    """The accelerator requests bound to this device's accelerators."""
    return list(
        session.scalars(
            select(AcceleratorRequest)
            .join(Deployable, AcceleratorRequest.deployable_id == Deployable.id)
            .where(Deployable.device_id == device.id, AcceleratorRequest.state == "Bound")
        )
    )


def alarm_allocation_holders(session: Session, device: Device, now: dt.datetime) -> None:
    """An accelerator that vanished while allocated: each holder gets an alarm by name."""
    for arq in allocation_holders(session, device):
        raise_alarm(
            session,
            ALLOCATED_HARDWARE_VANISHED,
            arq.uuid,
            f"accelerator request {arq.uuid} of instance {arq.instance_uuid} is bound "
            f"to {device.type} {device.pci_address or device.uuid} on "
            f"{device.hostname}, which vanished",
            now,
        )
