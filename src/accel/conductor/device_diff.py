"""One agent's stored devices against its report: what changed, and the writing of it.

A sync compares fingerprints first (``stored_fingerprints``, ``devices_rewritten``,
``devices_vanishing``), so a device that did not change is never loaded; only the
devices a report rewrites or retires are loaded (``load_devices``) and written
(``apply_report``). reconcile.py runs this for a batch of syncs in one transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from accel.conductor.alarms import (
    alarm_allocation_holders,
    allocation_holders,
    clear_alarms,
    raise_alarms,
)
from accel.conductor.hardware_rows import (
    device_columns,
    fingerprint,
    plan_deployables,
    sync_deployables,
)
from accel.conductor.health import HealthChange, HealthMemory, judge
from accel.db.models import Agent, Deployable, Device
from accel.internal.schemas import HardwareEntry, Kind
from accel.states import AlarmKind


class StoredDevice(NamedTuple):
    """A stored device as one narrow query reads it: enough to tell it unchanged."""

    fingerprint: str
    present: bool
    kind: str


@dataclass
class InventoryDiff:
    """What one sync did to an agent's devices, by uuid."""

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


def stored_fingerprints(
    session: Session, agent_ids: list[int]
) -> dict[int, dict[str, StoredDevice]]:
    """Per agent, its stored devices' fingerprints, from one narrow query.

    Most syncs change nothing; comparing fingerprints spares them loading every
    device with its deployables, attributes and attach handles as objects (most of
    a resync's cost at fleet scale, by the conductor's profile).
    """
    stored: dict[int, dict[str, StoredDevice]] = {agent_id: {} for agent_id in agent_ids}
    if not agent_ids:
        return stored
    rows = session.execute(
        select(Device.agent_id, Device.uuid, Device.fingerprint, Device.present, Device.type).where(
            Device.agent_id.in_(agent_ids)
        )
    )
    for agent_id, uuid, stored_fingerprint, present, kind in rows:
        stored[agent_id][uuid] = StoredDevice(stored_fingerprint, present, kind)
    return stored


def devices_rewritten(
    stored: dict[str, StoredDevice], reported: dict[str, HardwareEntry]
) -> set[str]:
    """The stored devices a sync rewrites: those reported changed, or back."""
    return {
        uuid
        for uuid, entry in reported.items()
        if (found := stored.get(uuid)) is not None
        and (not found.present or found.fingerprint != fingerprint(entry))
    }


def devices_vanishing(
    stored: dict[str, StoredDevice], reported: dict[str, HardwareEntry], vouched: set[Kind]
) -> set[str]:
    """Stored devices, present until now, that a report vouching for their kind lacks."""
    return {
        uuid
        for uuid, device in stored.items()
        if device.present and uuid not in reported and Kind(device.kind) in vouched
    }


def load_devices(session: Session, uuids: list[str]) -> dict[str, Device]:
    """The stored devices a batch rewrites or retires, with their deployables,
    attributes and attach handles, by uuid.

    A node with one changed GPU out of ten needs no rows of the other nine: their
    fingerprints, read already, count them unchanged. Loading every device of a
    changed node as objects was most of its sync. The graph comes in one joined
    query rather than one per level: a device has few deployables, each with a few
    attributes and handles, and three fewer queries made a lone changed sync
    cheaper.
    """
    if not uuids:
        return {}
    graph = joinedload(Device.deployables)
    query = (
        select(Device)
        .where(Device.uuid.in_(uuids))
        .options(graph.joinedload(Deployable.attributes))
        .options(graph.joinedload(Deployable.attach_handles))
    )
    return {device.uuid: device for device in session.scalars(query).unique()}


def apply_report(
    session: Session,
    agent: Agent,
    stored: dict[str, StoredDevice],
    loaded: dict[str, Device],
    reported: dict[str, HardwareEntry],
    now: dt.datetime,
    vanishing: set[str],
    health_changes: list[HealthChange] | None = None,
) -> InventoryDiff:
    """Applies one agent's report to its stored devices. ``loaded`` holds those of
    them the report rewrites (``devices_rewritten``) and those in ``vanishing``. Devices
    that turn failed or recover are added to ``health_changes``."""
    diff = InventoryDiff()
    back: list[Device] = []
    for uuid, entry in reported.items():
        known = uuid in stored
        if known and uuid not in loaded:
            diff.unchanged += 1
            continue
        # ``loaded`` is the whole batch's: a uuid this agent has not stored is new
        # here (one another agent holds was refused already, see uuid_clash).
        device = loaded[uuid] if known else None
        columns = device_columns(entry, agent.name)
        memory = HealthMemory() if device is None else HealthMemory.of(device)
        health, change = judge(entry, memory, now)
        if change is not None and health_changes is not None:
            health_changes.append(change)
        columns.update(health)
        if device is None:
            device = Device(uuid=uuid, agent_id=agent.id, present=True, created_at=now, **columns)
            session.add(device)
            sync_deployables(device, plan_deployables(entry, agent.name), now)
            diff.added.append(uuid)
            continue
        if not device.present:
            device.present = True
            device.vanished_at = None
            back.append(device)
            diff.returned.append(uuid)
        else:
            diff.changed.append(uuid)
        for name, value in columns.items():
            if getattr(device, name) != value:
                setattr(device, name, value)
        device.updated_at = now
        sync_deployables(device, plan_deployables(entry, agent.name), now)
    clear_alarms(session, AlarmKind.HARDWARE_VANISHED, [device.uuid for device in back], now)
    clear_alarms(
        session, AlarmKind.ALLOCATED_HARDWARE_VANISHED, allocation_holders(session, back), now
    )
    gone = [loaded[uuid] for uuid in sorted(vanishing) if loaded[uuid].present]
    for device in gone:
        device.present = False
        device.vanished_at = now
        diff.vanished.append(device.uuid)
    # In a few statements however many vanished (a driver that dropped its whole
    # report): the transaction, and the write lock it holds, stay short.
    raise_alarms(
        session,
        AlarmKind.HARDWARE_VANISHED,
        {
            device.uuid: f"{device.type} {device.pci_address or device.uuid} on "
            f"{agent.name} is no longer reported by its driver"
            for device in gone
        },
        now,
    )
    alarm_allocation_holders(session, gone, now)
    return diff
