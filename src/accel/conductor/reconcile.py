"""Writing an agent's reported hardware into the database as a diff, in one transaction.

New hardware is added, changed hardware updated, unchanged rows are not touched,
and hardware that vanished leaves the device list (``present`` false) with a
``hardware_vanished`` alarm and stays as history; if it comes back the alarm clears.
Only the kinds the agent vouches for this round may vanish: a driver that failed
or is not registered yet says nothing about its hardware.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from accel.conductor.alarms import (
    ALLOCATED_HARDWARE_VANISHED,
    HARDWARE_VANISHED,
    clear_alarm,
    raise_alarm,
)
from accel.conductor.hardware_rows import (
    DeployablePlan,
    device_columns,
    fingerprint,
    plan_deployables,
)
from accel.conductor.leases import check_and_release
from accel.db.models import (
    AcceleratorRequest,
    Agent,
    AttachHandle,
    Attribute,
    Deployable,
    Device,
)
from accel.errors import PeerError
from accel.internal.schemas import HardwareEntry, HardwareList, Kind

log = logging.getLogger(__name__)


@dataclass
class InventoryDiff:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    unchanged: int = 0

    def __str__(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.changed)} changed, "
            f"{len(self.returned)} returned, {len(self.vanished)} vanished, "
            f"{self.unchanged} unchanged"
        )


def vouched_kinds(report: HardwareList) -> set[Kind]:
    """Kinds whose absence from ``report`` means the hardware is gone."""
    if report.drivers is not None:
        return {outcome.type for outcome in report.drivers if outcome.state == "ok"}
    # A 1.0 agent does not say how its drivers fared: trust only kinds it shows.
    return {entry.acc_specs.device_type for entry in report.hardware}


def store_inventory(
    sessions: sessionmaker[Session],
    agent_name: str,
    report: HardwareList,
    started: dt.datetime,
    now: dt.datetime,
    next_sync_at: dt.datetime,
    owner: str | None = None,
) -> InventoryDiff:
    """Stores a sync that began at ``started``; a sync asked for since then stays due.

    With ``owner``, only while that conductor still holds the agent's sync lease
    (else ``LeaseLost`` and nothing written), and the lease is given back.
    """
    reported = {str(entry.uuid): entry for entry in report.hardware}
    if len(reported) != len(report.hardware):
        raise PeerError(agent_name, "reported the same hardware uuid twice")
    with sessions.begin() as session:
        agent = session.scalar(select(Agent).where(Agent.name == agent_name).with_for_update())
        if agent is None:
            raise PeerError(agent_name, "is not a registered agent")
        check_and_release(agent, owner)
        agent.last_synced_by = owner or agent.last_synced_by
        diff = _apply(session, agent, reported, vouched_kinds(report), now)
        agent.last_synced_at = now
        if agent.next_sync_at is None or agent.next_sync_at <= started:
            agent.next_sync_at = next_sync_at
        agent.last_sync_error = None
    return diff


def _apply(
    session: Session,
    agent: Agent,
    reported: dict[str, HardwareEntry],
    vouched: set[Kind],
    now: dt.datetime,
) -> InventoryDiff:
    unchanged = _count_if_unchanged(session, agent, reported, vouched)
    if unchanged is not None:
        return InventoryDiff(unchanged=unchanged)
    diff = InventoryDiff()
    stored = {
        device.uuid: device
        for device in session.scalars(
            select(Device)
            .where(Device.agent_id == agent.id)
            .options(
                selectinload(Device.deployables).selectinload(Deployable.attributes),
                selectinload(Device.deployables).selectinload(Deployable.attach_handles),
            )
        )
    }
    for uuid, entry in reported.items():
        columns = device_columns(entry, agent.name)
        device = stored.get(uuid)
        if device is None:
            device = Device(uuid=uuid, agent_id=agent.id, present=True, created_at=now, **columns)
            session.add(device)
            _sync_deployables(device, plan_deployables(entry, agent.name))
            diff.added.append(uuid)
            continue
        if not device.present:
            device.present = True
            device.vanished_at = None
            clear_alarm(session, HARDWARE_VANISHED, uuid, now)
            for holder in _holders(session, device):
                clear_alarm(session, ALLOCATED_HARDWARE_VANISHED, holder.uuid, now)
            diff.returned.append(uuid)
        elif device.fingerprint == columns["fingerprint"]:
            diff.unchanged += 1
            continue
        else:
            diff.changed.append(uuid)
        for name, value in columns.items():
            if getattr(device, name) != value:
                setattr(device, name, value)
        device.updated_at = now
        _sync_deployables(device, plan_deployables(entry, agent.name))
    for uuid, device in stored.items():
        if device.present and uuid not in reported and Kind(device.type) in vouched:
            device.present = False
            device.vanished_at = now
            raise_alarm(
                session,
                HARDWARE_VANISHED,
                uuid,
                f"{device.type} {device.pci_address or uuid} on {agent.name} is no "
                "longer reported by its driver",
                now,
            )
            _alarm_for_allocations(session, device, now)
            diff.vanished.append(uuid)
    return diff


def _count_if_unchanged(
    session: Session, agent: Agent, reported: dict[str, HardwareEntry], vouched: set[Kind]
) -> int | None:
    """How many devices the report holds, when it changes nothing stored; else None.

    Most syncs change nothing. Comparing fingerprints from one narrow query spares
    them loading every device with its deployables, attributes and attach handles
    as objects (most of a resync's cost at fleet scale, by the conductor's profile).
    """
    stored = {
        uuid: (stored_fingerprint, present, kind)
        for uuid, stored_fingerprint, present, kind in session.execute(
            select(Device.uuid, Device.fingerprint, Device.present, Device.type).where(
                Device.agent_id == agent.id
            )
        )
    }
    for uuid, entry in reported.items():
        found = stored.get(uuid)
        if found is None or not found[1] or found[0] != fingerprint(entry):
            return None
    for uuid, (_, present, kind) in stored.items():
        if present and uuid not in reported and Kind(kind) in vouched:
            return None
    return len(reported)


def _holders(session: Session, device: Device) -> list[AcceleratorRequest]:
    """The accelerator requests bound to this device's accelerators."""
    return list(
        session.scalars(
            select(AcceleratorRequest)
            .join(Deployable, AcceleratorRequest.deployable_id == Deployable.id)
            .where(Deployable.device_id == device.id, AcceleratorRequest.state == "Bound")
        )
    )


def _alarm_for_allocations(session: Session, device: Device, now: dt.datetime) -> None:
    """An accelerator that vanished while allocated: each holder gets an alarm by name."""
    holders = session.scalars(
        select(AcceleratorRequest)
        .join(Deployable, AcceleratorRequest.deployable_id == Deployable.id)
        .where(Deployable.device_id == device.id, AcceleratorRequest.state == "Bound")
    ).all()
    for arq in holders:
        raise_alarm(
            session,
            ALLOCATED_HARDWARE_VANISHED,
            arq.uuid,
            f"accelerator request {arq.uuid} of instance {arq.instance_uuid} is bound "
            f"to {device.type} {device.pci_address or device.uuid} on "
            f"{device.hostname}, which vanished",
            now,
        )


def _sync_deployables(device: Device, plans: Iterable[DeployablePlan]) -> None:
    """Brings the device's deployables to ``plans``, keeping rows whose name survives."""
    wanted = {plan.name: plan for plan in plans}
    for stale in [d for d in device.deployables if d.name not in wanted]:
        device.deployables.remove(stale)
    existing = {deployable.name: deployable for deployable in device.deployables}
    for name, plan in wanted.items():
        deployable = existing.get(name)
        if deployable is None:
            deployable = Deployable(name=name, rp_uuid=plan.rp_uuid)
            device.deployables.append(deployable)
        deployable.num_accelerators = plan.num_accelerators
        deployable.driver_name = plan.driver_name
        if [(a.key, a.value) for a in deployable.attributes] != list(plan.attributes):
            deployable.attributes = [Attribute(key=k, value=v) for k, v in plan.attributes]
        _sync_attach_handles(deployable, plan.attach_handles)


def _sync_attach_handles(deployable: Deployable, wanted: tuple[tuple[str, str], ...]) -> None:
    # Keyed by attach_info, like Cyborg: a surviving handle keeps its in_use flag.
    existing = {handle.attach_info: handle for handle in deployable.attach_handles}
    wanted_infos = {info for _, info in wanted}
    for info, stale in existing.items():
        if info not in wanted_infos:
            deployable.attach_handles.remove(stale)
    for attach_type, info in wanted:
        handle = existing.get(info)
        if handle is None:
            deployable.attach_handles.append(
                AttachHandle(attach_type=attach_type, attach_info=info, in_use=False)
            )
        elif handle.attach_type != attach_type:
            handle.attach_type = attach_type
