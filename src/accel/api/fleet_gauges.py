"""The fleet as the api's ``/metrics`` serves it: one read of the database per scrape.

Aggregates only: counts grouped in SQL, one row per agent and per conductor, so the
rows a scrape reads back grow with the fleet's agents, not its devices
(docs/benchmarks.md, "Figures behind the code", has its time). The gauges
themselves are defined in accel.metrics.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from accel.api.health_gauge import HealthCollector, health_rows
from accel.api.policy import authorize
from accel.api.queries import reader
from accel.db.columns import utcnow
from accel.db.conductor_liveness import conductor_alive
from accel.db.models import Agent, Alarm, AttachHandle, Conductor, Deployable, Device
from accel.db.outage import DATABASE_AWAY
from accel.metrics import DeviceUse, FleetCollector, FleetSnapshot, exposition
from accel.states import AgentState, AlarmKind, AlarmState, DeviceStatus

log = logging.getLogger(__name__)


def _use(present: bool, pending: bool, status: str) -> DeviceUse:
    """A device's use, but for in_use, which _device_counts decides from the handles."""
    if not present:
        return DeviceUse.VANISHED
    if pending:
        return DeviceUse.SETUP_REQUIRED
    return DeviceUse.MAINTAINING if status == DeviceStatus.MAINTAINING else DeviceUse.READY


def _device_counts(session: Session) -> dict[tuple[str, DeviceUse], int]:
    """Grouped on plain columns, then the devices with a bound handle moved from their
    group to in_use: a subquery per device made a scrape of 10,000 devices on
    PostgreSQL several times slower."""
    pending = or_(Device.setup_required.is_(True), Device.reboot_required.is_(True))
    columns = (Device.type, Device.present, pending, Device.status)
    counts: dict[tuple[str, DeviceUse], int] = {}
    for kind, present, waits, status, count in session.execute(
        select(*columns, func.count()).group_by(*columns)
    ):
        use = _use(present, waits, status)
        counts[kind, use] = counts.get((kind, use), 0) + count
    bound = (
        select(*columns, func.count(func.distinct(Device.id)))
        .join(Deployable, Deployable.device_id == Device.id)
        .join(AttachHandle, AttachHandle.deployable_id == Deployable.id)
        .where(AttachHandle.in_use.is_(True), Device.present.is_(True))
        .group_by(*columns)
    )
    for kind, present, waits, status, count in session.execute(bound):
        use = _use(present, waits, status)
        counts[kind, use] -= count
        counts[kind, DeviceUse.IN_USE] = counts.get((kind, DeviceUse.IN_USE), 0) + count
    return {key: count for key, count in counts.items() if count}


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

    def read(session: Session) -> tuple[FleetSnapshot, list[Any]]:
        return fleet_snapshot(session), health_rows(session)

    try:
        snapshot, devices = await reader(request).run(read)
    except DATABASE_AWAY as exc:
        log.warning("metrics without the fleet's gauges: the database is away: %s", exc)
        return exposition(FleetCollector(None, tuple(AlarmKind)))
    return exposition(FleetCollector(snapshot, tuple(AlarmKind)), HealthCollector(devices))
