"""What the fleet page shows, gathered through the api's own queries.

The rows come from the queries behind ``/v2/hardware``, ``/v2/agents``,
``/v2/alarms``, ``/v2/operations`` and ``/v2/accelerator_requests`` (accel.api.fleet,
accel.api.operations, accel.api.accelerator_requests), so the page and the API
always tell the same thing; this module only sorts them into what an operator asks:
per node, how many devices are ready, in use, waiting for setup, unhealthy or gone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Select, cast, func, or_, select, type_coerce
from sqlalchemy.orm import Session

from accel.api.accelerator_requests import ArqView, view_statement
from accel.api.auth import RequestContext
from accel.api.devices import timestamp
from accel.api.fleet import (
    agent_rows,
    alarm_rows,
    hardware_body,
    hardware_rows,
    hardware_statement,
)
from accel.conductor.health import HEALTH_COLUMNS, HealthRow, failure_reason
from accel.db.models import AcceleratorRequest, Agent, Alarm, Deployable, Device
from accel.states import AgentState, ArqState, HealthState


class Condition(StrEnum):
    """Where a device stands for an operator: the roll-up's columns and the table's
    ``state`` filter. Each device is in exactly one, the first that holds in this order."""

    VANISHED = "vanished"
    UNHEALTHY = "unhealthy"  # failed or degraded
    NEEDS_SETUP = "needs_setup"
    IN_USE = "in_use"
    READY = "ready"


@dataclass(frozen=True)
class Health:
    state: HealthState
    why: str
    since: str | None


NO_HEALTH = Health(HealthState.UNKNOWN, "no health reported", None)


def health_of(device: HealthRow) -> Health:
    """A device's health as the page shows it, from its stored health (the one place
    the page reads health): ``unknown`` until its driver reported some."""
    if device.health_state is None:
        return NO_HEALTH
    state = HealthState(device.health_state)
    why = failure_reason(device) if state in (HealthState.FAILED, HealthState.DEGRADED) else ""
    return Health(state, why, timestamp(device.health_since))


@dataclass(frozen=True)
class DeviceLine:
    uuid: str
    node: str
    kind: str
    model: str
    pci_address: str | None
    admin_state: str
    present: bool
    setup_pending: bool
    health: Health
    instances: tuple[str, ...]
    first_seen: str | None
    vanished_at: str | None

    @property
    def condition(self) -> Condition:
        return condition_of(
            self.present, self.health.state, self.setup_pending, bool(self.instances)
        )


def condition_of(present: bool, health: str | None, setup_pending: bool, in_use: bool) -> Condition:
    """The one rule that puts a device in its Condition (a row, and the roll-up's counts)."""
    if not present:
        return Condition.VANISHED
    if health in (HealthState.FAILED, HealthState.DEGRADED):
        return Condition.UNHEALTHY
    if setup_pending:
        return Condition.NEEDS_SETUP
    if in_use:
        return Condition.IN_USE
    return Condition.READY


@dataclass
class NodeLine:
    name: str
    state: AgentState | None  # None: devices recorded under a name no agent has now
    last_seen: str | None
    counts: Counter[Condition] = field(default_factory=Counter)


def _report(dialect: str) -> Any:
    """The stored report as JSON, so that a list reads the few fields it shows in SQL
    rather than loading and parsing kilobytes a device: SQLite reads the text as JSON
    as it is, PostgreSQL is told to."""
    if dialect == "postgresql":
        return cast(Device.hardware, JSON)
    return type_coerce(Device.hardware, JSON)


def _line_columns(dialect: str) -> tuple[Any, ...]:
    report = _report(dialect)
    return (
        Device.id,
        Device.uuid,
        Device.hostname,
        Device.type,
        Device.model,
        Device.pci_address,
        Device.status,
        Device.present,
        Device.setup_required,
        Device.reboot_required,
        Device.created_at,
        Device.vanished_at,
        report[("gpu", "name")].as_string().label("gpu_name"),
        report[("pci", "product_name")].as_string().label("product_name"),
        *HEALTH_COLUMNS,
    )


def _bound(caller: RequestContext) -> Select[Any]:
    """The bound accelerator requests with their device's id, as far as ``caller`` may
    see requests (the API's own statement, with its project filter)."""
    return (
        view_statement(caller.is_admin, None)
        .add_columns(Deployable.device_id)
        .join(Deployable, AcceleratorRequest.deployable_id == Deployable.id)
        .where(AcceleratorRequest.state == ArqState.BOUND)
    )


def _bound_instances(session: Session, caller: RequestContext) -> dict[int, list[str]]:
    """The instances bound to each device, by device id."""
    bound: dict[int, list[str]] = {}
    for row in session.execute(_bound(caller), {"project": caller.identity.project_id}):
        if row.instance_uuid is not None:
            bound.setdefault(row.device_id, []).append(row.instance_uuid)
    return bound


def device_lines(
    session: Session,
    caller: RequestContext,
    node: str | None = None,
    kind: str | None = None,
    uuid: str | None = None,
) -> list[DeviceLine]:
    """Every device, present or vanished, by node, kind and PCI address (the devices
    ``/v2/hardware?state=all`` lists, chosen by the same statement)."""
    columns = _line_columns(session.get_bind().dialect.name)
    # On the bare connection: plain rows, without the ORM's bookkeeping per row.
    rows = session.connection().execute(hardware_statement(columns, "all", kind, node, uuid))
    bound = _bound_instances(session, caller)
    return [
        DeviceLine(
            uuid=row.uuid,
            node=row.hostname,
            kind=row.type,
            # The driver's or the PCI database's name; Cyborg's model is the product id.
            model=row.gpu_name or row.product_name or row.model,
            pci_address=row.pci_address,
            admin_state=row.status,
            present=row.present,
            setup_pending=row.setup_required or row.reboot_required,
            health=health_of(row),
            instances=tuple(bound.get(row.id, ())),
            first_seen=timestamp(row.created_at),
            vanished_at=timestamp(row.vanished_at),
        )
        for row in rows
    ]


def device_report(session: Session, uuid: str) -> dict[str, Any] | None:
    """A device's whole report, as ``/v2/hardware`` shows it (its page's facts)."""
    found = hardware_rows(session, "all", uuid=uuid)
    return hardware_body(*found[0]) if found else None


def node_counts(session: Session, caller: RequestContext) -> dict[str, Counter[Condition]]:
    """How many devices of each node are in each Condition, counted in SQL: the
    roll-up of a large fleet never loads its devices one by one."""
    bound = _bound(caller).with_only_columns(Deployable.device_id).order_by(None)
    per_device = select(
        Device.hostname.label("node"),
        Device.present.label("present"),
        Device.health_state.label("health"),
        or_(Device.setup_required, Device.reboot_required).label("setup"),
        Device.id.in_(bound).label("in_use"),
    ).subquery()
    keys = [per_device.c[name] for name in ("node", "present", "health", "setup", "in_use")]
    statement = select(*keys, func.count().label("devices")).group_by(*keys)
    counts: dict[str, Counter[Condition]] = {}
    rows = session.connection().execute(statement, {"project": caller.identity.project_id})
    for row in rows:
        condition = condition_of(bool(row.present), row.health, bool(row.setup), bool(row.in_use))
        counts.setdefault(row.node, Counter())[condition] += row.devices
    return counts


def node_lines(agents: Sequence[Agent], counts: Mapping[str, Counter[Condition]]) -> list[NodeLine]:
    """One line per node: its agent and how many of its devices are in each condition."""
    # An UP agent was heard within its conductor's limit, and its last_seen moves with
    # every heartbeat: shown, it would make every refresh of the page a new one
    # (accel.api.ui.freshness). A DOWN agent's stands still and is what one asks.
    nodes = {
        agent.name: NodeLine(
            agent.name,
            agent.state,
            None if agent.state == AgentState.UP else timestamp(agent.last_seen),
        )
        for agent in agents
    }
    for node, found in counts.items():
        nodes.setdefault(node, NodeLine(node, None, None)).counts.update(found)
    return sorted(nodes.values(), key=lambda line: line.name)


@dataclass(frozen=True)
class Fleet:
    nodes: list[NodeLine]
    totals: Counter[Condition]
    active_alarms: int


def fleet(session: Session, caller: RequestContext) -> Fleet:
    counts = node_counts(session, caller)
    nodes = node_lines(agent_rows(session), counts)
    totals: Counter[Condition] = sum(counts.values(), Counter())
    return Fleet(nodes, totals, len(alarm_rows(session, "active")))


@dataclass(frozen=True)
class AlarmLine:
    alarm: Alarm
    # Where the subject is shown: a device's page, or its node's devices.
    subject_device: str | None
    subject_node: str | None


def alarm_lines(session: Session, state: str = "active") -> list[AlarmLine]:
    alarms = alarm_rows(session, state)
    subjects = {alarm.subject for alarm in alarms}
    devices = set(session.scalars(select(Device.uuid).where(Device.uuid.in_(subjects))))
    nodes = set(session.scalars(select(Agent.name).where(Agent.name.in_(subjects))))
    return [
        AlarmLine(
            alarm,
            alarm.subject if alarm.subject in devices else None,
            alarm.subject if alarm.subject in nodes else None,
        )
        for alarm in alarms
    ]


def device_arqs(session: Session, caller: RequestContext, device_uuid: str) -> list[ArqView]:
    """The accelerator requests on a device's deployables that ``caller`` may see."""
    on_device = select(Deployable.id).join(Device).where(Device.uuid == device_uuid)
    statement = view_statement(caller.is_admin, None).where(
        AcceleratorRequest.deployable_id.in_(on_device)
    )
    rows = session.execute(statement, {"project": caller.identity.project_id})
    return [ArqView(**row._mapping) for row in rows]
