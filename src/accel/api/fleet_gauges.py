"""The fleet as the api's ``/metrics`` serves it: one read of the database per scrape.

Aggregates only (counts grouped in SQL, one row per agent and per conductor), so a
scrape costs a few indexed queries whatever the fleet's size. The gauges themselves
are defined in accel.metrics.
"""

from __future__ import annotations

import logging

from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from accel.api.conductor_link import conductor_alive
from accel.api.policy import authorize
from accel.api.queries import reader
from accel.db.models import Agent, Alarm, AttachHandle, Conductor, Deployable, Device, utcnow
from accel.db.outage import DATABASE_AWAY
from accel.metrics import DeviceUse, FleetCollector, FleetSnapshot, exposition
from accel.states import AgentState, AlarmKind, AlarmState, DeviceStatus

log = logging.getLogger(__name__)


def _device_counts(session: Session) -> dict[tuple[str, DeviceUse], int]:
    in_use = exists(
        select(AttachHandle.id)
        .join(Deployable, AttachHandle.deployable_id == Deployable.id)
        .where(Deployable.device_id == Device.id, AttachHandle.in_use.is_(True))
    )
    use = case(
        (Device.present.is_(False), DeviceUse.VANISHED.value),
        (in_use, DeviceUse.IN_USE.value),
        (
            or_(Device.setup_required.is_(True), Device.reboot_required.is_(True)),
            DeviceUse.SETUP_REQUIRED.value,
        ),
        (Device.status == DeviceStatus.MAINTAINING, DeviceUse.MAINTAINING.value),
        else_=DeviceUse.READY.value,
    )
    # Grouped outside: PostgreSQL would not match a GROUP BY on the CASE itself, whose
    # literals are bound apart from the SELECT's.
    each = select(Device.type.label("kind"), use.label("use")).subquery()
    return {
        (kind, DeviceUse(found)): count
        for kind, found, count in session.execute(
            select(each.c.kind, each.c.use, func.count()).group_by(each.c.kind, each.c.use)
        )
    }


def fleet_snapshot(session: Session) -> FleetSnapshot:
    now = utcnow()
    agents_up = {
        name: state == AgentState.UP
        for name, state in session.execute(select(Agent.name, Agent.state))
    }
    up = Agent.state == AgentState.UP
    due, oldest_due = session.execute(
        select(func.count(), func.min(Agent.next_sync_at)).where(up, Agent.next_sync_at <= now)
    ).one()
    failing = session.scalar(select(func.count()).where(up, Agent.last_sync_error.is_not(None)))
    orphaned = session.scalar(
        select(func.count()).where(
            and_(Agent.sync_owner.is_not(None), Agent.sync_lease_until < now)
        )
    )
    alarms = {
        str(kind): count
        for kind, count in session.execute(
            select(Alarm.kind, func.count())
            .where(Alarm.state == AlarmState.ACTIVE)
            .group_by(Alarm.kind)
        )
    }
    alive = sum(
        conductor_alive(until, seen, now)
        for until, seen in session.execute(select(Conductor.alive_until, Conductor.last_seen))
    )
    return FleetSnapshot(
        devices=_device_counts(session),
        active_alarms=alarms,
        agents_up=agents_up,
        conductors_alive=alive,
        syncs_due=due,
        sync_lag_seconds=0.0 if oldest_due is None else (now - oldest_due).total_seconds(),
        syncs_failing=failing or 0,
        leases_orphaned=orphaned or 0,
    )


async def fleet_metrics(request: Request) -> Response:
    """The process's metrics and the fleet's, or the process's alone while the
    database is away (its request latencies matter most then)."""
    authorize(request, "accel:fleet:get")
    try:
        snapshot: FleetSnapshot | None = await reader(request).run(fleet_snapshot)
    except DATABASE_AWAY as exc:
        log.warning("metrics without the fleet's gauges: the database is away: %s", exc)
        snapshot = None
    return exposition(FleetCollector(snapshot, tuple(AlarmKind)))
