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

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from accel.api.accelerator_requests import ArqView, view_statement
from accel.api.auth import RequestContext
from accel.api.devices import timestamp
from accel.api.fleet import agent_rows, alarm_rows, hardware_body, hardware_rows
from accel.db.models import AcceleratorRequest, Agent, Alarm, Deployable, Device
from accel.internal.health_schemas import DeviceHealth
from accel.states import AgentState, ArqState, CheckSeverity, HealthState


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


def health_of(hardware: Mapping[str, Any]) -> Health:
    """A device's health as the page shows it, from its hardware body (``/v2/hardware``):
    the one place the page reads health, ``unknown`` while the device has none."""
    reported = hardware.get("health")
    if reported is None:
        return NO_HEALTH
    try:
        health = DeviceHealth.model_validate(reported)
    except ValidationError:
        return Health(HealthState.UNKNOWN, "health unreadable", None)
    why = "; ".join(
        f"{check.check}: {check.value}"
        for check in health.checks
        if check.severity != CheckSeverity.OK
    )
    return Health(health.state, why, timestamp(health.since))


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
    hardware: dict[str, Any]

    @property
    def condition(self) -> Condition:
        if not self.present:
            return Condition.VANISHED
        if self.health.state in (HealthState.FAILED, HealthState.DEGRADED):
            return Condition.UNHEALTHY
        if self.setup_pending:
            return Condition.NEEDS_SETUP
        if self.instances:
            return Condition.IN_USE
        return Condition.READY


@dataclass
class NodeLine:
    name: str
    state: AgentState | None  # None: devices recorded under a name no agent has now
    last_seen: str | None
    counts: Counter[Condition] = field(default_factory=Counter)


def _model_name(device: Device, hardware: Mapping[str, Any]) -> str:
    gpu = hardware.get("gpu") or {}
    pci = hardware.get("pci") or {}
    return str(gpu.get("name") or pci.get("product_name") or device.model)


def _bound_instances(session: Session, caller: RequestContext) -> dict[int, list[str]]:
    """The instances bound to each device (by device id), as far as ``caller`` may see
    accelerator requests (the API's own statement, with its project filter)."""
    statement = (
        view_statement(caller.is_admin, None)
        .add_columns(Deployable.device_id)
        .join(Deployable, AcceleratorRequest.deployable_id == Deployable.id)
        .where(AcceleratorRequest.state == ArqState.BOUND)
    )
    bound: dict[int, list[str]] = {}
    for row in session.execute(statement, {"project": caller.identity.project_id}):
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
    """Every device, present or vanished, by node, kind and PCI address."""
    rows = hardware_rows(session, "all", kind, node, uuid)
    bound = _bound_instances(session, caller)
    lines = []
    for device, agent_state in rows:
        body = hardware_body(device, agent_state)
        lines.append(
            DeviceLine(
                uuid=device.uuid,
                node=device.hostname,
                kind=device.type,
                model=_model_name(device, body),
                pci_address=device.pci_address,
                admin_state=device.status,
                present=device.present,
                setup_pending=device.setup_required or device.reboot_required,
                health=health_of(body),
                instances=tuple(bound.get(device.id, ())),
                first_seen=timestamp(device.created_at),
                vanished_at=timestamp(device.vanished_at),
                hardware=body,
            )
        )
    return lines


def node_lines(agents: Sequence[Agent], devices: Sequence[DeviceLine]) -> list[NodeLine]:
    """One line per node: its agent and how many of its devices are in each condition."""
    nodes = {
        agent.name: NodeLine(agent.name, agent.state, timestamp(agent.last_seen))
        for agent in agents
    }
    for device in devices:
        line = nodes.setdefault(device.node, NodeLine(device.node, None, None))
        line.counts[device.condition] += 1
    return sorted(nodes.values(), key=lambda line: line.name)


@dataclass(frozen=True)
class Fleet:
    nodes: list[NodeLine]
    totals: Counter[Condition]
    active_alarms: int


def fleet(session: Session, caller: RequestContext) -> Fleet:
    devices = device_lines(session, caller)
    nodes = node_lines(agent_rows(session), devices)
    totals: Counter[Condition] = Counter(device.condition for device in devices)
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
