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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, sessionmaker

from accel.conductor.alarms import (
    alarm_allocation_holders,
    allocation_holders,
    clear_alarms,
    raise_alarms,
)
from accel.conductor.first_inventory import FirstInventory, insert_first_inventories
from accel.conductor.hardware_rows import (
    device_columns,
    fingerprint,
    function_named_twice,
    plan_deployables,
    sync_deployables,
)
from accel.conductor.health import HealthBrake, HealthChange, HealthMemory, judge, settle
from accel.conductor.leases import LeaseLost, check_and_release
from accel.conductor.sync_schedule import sync_in_full_now, unless_asked_since
from accel.conductor.uuid_clash import UuidClashes, new_uuids
from accel.db.columns import utcnow
from accel.db.models import Agent, Deployable, Device
from accel.errors import PeerError
from accel.internal.schemas import MAX_ENTRIES_PER_DRIVER, HardwareEntry, HardwareList, Kind
from accel.states import AlarmKind

log = logging.getLogger(__name__)


class StoredDevice(NamedTuple):
    fingerprint: str
    present: bool
    kind: str


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


@dataclass(frozen=True)
class FinishedSync:
    """One agent's discovery, to be stored: began at ``started``, read at ``now``."""

    agent_name: str
    # None: the agent answered 304, its content unchanged since the ``etag`` sent.
    report: HardwareList | None
    started: dt.datetime
    now: dt.datetime
    next_sync_at: dt.datetime
    # The conductor whose sync lease must still be held; None outside the sync loop.
    owner: str | None = None
    # The ETag of the report's content (1.4 agents), sent with the next resync.
    etag: str | None = None


def store_inventory(
    sessions: sessionmaker[Session],
    agent_name: str,
    report: HardwareList,
    started: dt.datetime,
    now: dt.datetime,
    next_sync_at: dt.datetime,
    owner: str | None = None,
) -> InventoryDiff:
    """Stores one sync; see ``store_inventories``."""
    sync = FinishedSync(agent_name, report, started, now, next_sync_at, owner)
    (outcome,) = store_inventories(sessions, [sync])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def store_inventories(
    sessions: sessionmaker[Session],
    syncs: Sequence[FinishedSync],
    brake: HealthBrake | None = None,
) -> list[InventoryDiff | Exception]:
    """Stores several agents' syncs in one transaction; each one's diff, or its error.

    A sync asked for since a sync began stays due. A sync with an ``owner`` is written
    only while that conductor still holds the agent's sync lease (else ``LeaseLost``
    in its place, and nothing of it written), and the lease is given back. Devices
    that turn failed or recover have their effects settled (``health.settle``, with
    ``brake``, the default one if None).
    """
    names = [sync.agent_name for sync in syncs]
    for index, name in enumerate(names):
        if name in names[:index]:  # a later sync of one agent sees the earlier one's rows
            return [
                *store_inventories(sessions, syncs[:index], brake),
                *store_inventories(sessions, syncs[index:], brake),
            ]
    outcomes: list[InventoryDiff | Exception] = []
    with sessions.begin() as session:
        # Locked in id order, as every batch of the conductor's does: no deadlock.
        agents = {
            agent.name: agent
            for agent in session.scalars(
                select(Agent).where(Agent.name.in_(names)).order_by(Agent.id).with_for_update()
            )
        }
        stored = _stored_fingerprints(session, [agent.id for agent in agents.values()])
        clashes = UuidClashes.load(
            session,
            (
                uuid
                for sync in syncs
                if sync.report is not None and (agent := agents.get(sync.agent_name))
                for uuid in new_uuids(stored[agent.id], (str(e.uuid) for e in sync.report.hardware))
            ),
        )
        changing: list[tuple[int, Agent, set[Kind], dt.datetime, dict[str, HardwareEntry]]] = []
        # Per agent, the stored devices its report rewrites (fingerprints compared once)
        # and those it retires.
        rewritten: dict[int, set[str]] = {}
        vanishing: dict[int, set[str]] = {}
        for sync in syncs:
            try:
                agent = agents.get(sync.agent_name)
                if agent is None:
                    raise PeerError(sync.agent_name, "is not a registered agent")
                if sync.report is None:
                    outcomes.append(_store_unchanged(agent, sync, stored[agent.id]))
                    continue
                reported = _reported(agent, sync.report)
                vouched = vouched_kinds(sync.report)
                _bookkeep(agent, sync)
                # Placement's root for the node: the agent's word, else its name.
                agent.resource_provider_name = sync.report.resource_provider_name
                for uuid in clashes.refuse(agent.name, new_uuids(stored[agent.id], reported)):
                    del reported[uuid]
                # A partial report is never matched by ETag: its next sync is in full.
                agent.inventory_etag = sync.etag if sync.report.complete else None
                rewritten[agent.id] = _rewritten(stored[agent.id], reported)
                vanishing[agent.id] = _vanishing(stored[agent.id], reported, vouched)
                if not (
                    rewritten[agent.id]
                    or vanishing[agent.id]
                    or any(uuid not in stored[agent.id] for uuid in reported)
                ):
                    outcomes.append(InventoryDiff(unchanged=len(reported)))
                    continue
                changing.append((len(outcomes), agent, vouched, sync.now, reported))
                outcomes.append(InventoryDiff())
            except (PeerError, LeaseLost) as exc:
                outcomes.append(exc)
        clashes.write(session, max((sync.now for sync in syncs), default=utcnow()))
        # Agents with nothing stored yet (a fleet coming up) are inserted in bulk.
        first = [entry for entry in changing if not stored[entry[1].id]]
        health_changes = insert_first_inventories(
            session,
            [
                FirstInventory(agent.id, agent.name, reported, now)
                for _, agent, _, now, reported in first
            ],
        )
        for index, _, _, _, reported in first:
            outcomes[index] = InventoryDiff(added=list(reported))
        later = [entry for entry in changing if stored[entry[1].id]]
        devices = _load_devices(
            session,
            [uuid for _, a, _, _, _ in later for uuid in rewritten[a.id] | vanishing[a.id]],
        )
        # One flush at the commit: inserts of the whole batch go out together.
        with session.no_autoflush:
            for index, agent, _, now, reported in later:
                outcomes[index] = _apply(
                    session,
                    agent,
                    stored[agent.id],
                    devices,
                    reported,
                    now,
                    vanishing[agent.id],
                    health_changes,
                )
        if health_changes:
            hostnames = {
                str(uuid): agent.name for _, agent, _, _, reported in changing for uuid in reported
            }
            settle(
                session,
                health_changes,
                hostnames,
                max(sync.now for sync in syncs),
                brake or HealthBrake(),
            )
    return outcomes


def _reported(agent: Agent, report: HardwareList) -> dict[str, HardwareEntry]:
    reported = {str(entry.uuid): entry for entry in report.hardware}
    if len(reported) != len(report.hardware):
        raise PeerError(agent.name, "reported the same hardware uuid twice")
    twice = function_named_twice(report)
    if twice is not None:
        # Two attach handles of one function would bind two instances to one device.
        raise PeerError(agent.name, f"reported PCI function {twice} twice")
    # One driver per kind: an agent that lets through more than a driver may report
    # (an older or a hostile one) has its report refused whole, its inventory kept.
    per_kind = Counter(entry.acc_specs.device_type for entry in report.hardware)
    for kind, count in per_kind.items():
        if count > MAX_ENTRIES_PER_DRIVER:
            raise PeerError(
                agent.name,
                f"reported {count} {kind} entries, more than the {MAX_ENTRIES_PER_DRIVER} "
                "one driver may report",
            )
    return reported


def _store_unchanged(
    agent: Agent, sync: FinishedSync, stored: dict[str, StoredDevice]
) -> InventoryDiff:
    """A 304: the agent's content still has the ETag this conductor sent. Only if that
    is still the ETag stored (no other conductor stored a newer report meanwhile) is
    nothing to change; else the agent is synced again, in full, at once."""
    _bookkeep(agent, sync)
    if sync.etag is None or agent.inventory_etag != sync.etag:
        sync_in_full_now(agent, sync.now)
        return InventoryDiff()
    return InventoryDiff(unchanged=sum(device.present for device in stored.values()))


def _bookkeep(agent: Agent, sync: FinishedSync) -> None:
    """The agent's lease is given back and its sync recorded (``LeaseLost`` if not its)."""
    check_and_release(agent, sync.owner)
    agent.last_synced_by = sync.owner or agent.last_synced_by
    agent.last_synced_at = sync.now
    agent.next_sync_at = unless_asked_since(sync.next_sync_at, agent.next_sync_at, sync.started)
    agent.last_sync_error = None


def _rewritten(stored: dict[str, StoredDevice], reported: dict[str, HardwareEntry]) -> set[str]:
    """The stored devices a sync rewrites: those reported changed, or back."""
    return {
        uuid
        for uuid, entry in reported.items()
        if (found := stored.get(uuid)) is not None
        and (not found.present or found.fingerprint != fingerprint(entry))
    }


def _load_devices(session: Session, uuids: list[str]) -> dict[str, Device]:
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


def _apply(
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
    them the report rewrites (``_rewritten``) and those in ``vanishing``. Devices
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


def _stored_fingerprints(
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


def _vanishing(
    stored: dict[str, StoredDevice], reported: dict[str, HardwareEntry], vouched: set[Kind]
) -> set[str]:
    """Stored devices, present until now, that a report vouching for their kind lacks."""
    return {
        uuid
        for uuid, device in stored.items()
        if device.present and uuid not in reported and Kind(device.kind) in vouched
    }
