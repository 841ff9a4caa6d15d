"""Writing an agent's reported hardware into the database as a diff, in one transaction.

New hardware is added, changed hardware updated, unchanged rows are not touched,
and hardware that vanished leaves the device list (``present`` false) with a
``hardware_vanished`` alarm and stays as history; if it comes back the alarm clears.
Only the kinds the agent vouches for this round may vanish: a driver that failed
or is not registered yet says nothing about its hardware.

This module stores a batch of syncs in one transaction; how one agent's stored
devices compare with its report, and the writing of the difference, is device_diff.py.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.device_diff import (
    InventoryDiff,
    StoredDevice,
    apply_report,
    devices_rewritten,
    devices_vanishing,
    load_devices,
    stored_fingerprints,
)
from accel.conductor.first_inventory import FirstInventory, insert_first_inventories
from accel.conductor.hardware_rows import function_named_twice
from accel.conductor.health import HealthBrake, settle
from accel.conductor.leases import LeaseLost, check_and_release
from accel.conductor.sync_schedule import sync_in_full_now, unless_asked_since
from accel.conductor.uuid_clash import UuidClashes, new_uuids
from accel.db.columns import utcnow
from accel.db.models import Agent
from accel.errors import PeerError
from accel.internal.schemas import MAX_ENTRIES_PER_DRIVER, HardwareEntry, HardwareList, Kind

log = logging.getLogger(__name__)


def vouched_kinds(report: HardwareList) -> set[Kind]:
    """Kinds whose absence from ``report`` means the hardware is gone."""
    if report.drivers is not None:
        return {outcome.type for outcome in report.drivers if outcome.state == "ok"}
    # A 1.0 agent does not say how its drivers fared: trust only kinds it shows.
    return {entry.acc_specs.device_type for entry in report.hardware}


class _Change(NamedTuple):
    """A sync that changes its agent's stored devices."""

    outcome: int  # its place in the batch's outcomes
    agent: Agent
    now: dt.datetime
    reported: dict[str, HardwareEntry]  # by uuid, less any refused for a clash


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
        stored = stored_fingerprints(session, [agent.id for agent in agents.values()])
        clashes = UuidClashes.load(
            session,
            (
                uuid
                for sync in syncs
                if sync.report is not None and (agent := agents.get(sync.agent_name))
                for uuid in new_uuids(stored[agent.id], (str(e.uuid) for e in sync.report.hardware))
            ),
        )
        changing: list[_Change] = []
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
                rewritten[agent.id] = devices_rewritten(stored[agent.id], reported)
                vanishing[agent.id] = devices_vanishing(stored[agent.id], reported, vouched)
                if not (
                    rewritten[agent.id]
                    or vanishing[agent.id]
                    or any(uuid not in stored[agent.id] for uuid in reported)
                ):
                    outcomes.append(InventoryDiff(unchanged=len(reported)))
                    continue
                changing.append(_Change(len(outcomes), agent, sync.now, reported))
                outcomes.append(InventoryDiff())
            except (PeerError, LeaseLost) as exc:
                outcomes.append(exc)
        clashes.write(session, max((sync.now for sync in syncs), default=utcnow()))
        # Agents with nothing stored yet (a fleet coming up) are inserted in bulk.
        first = [change for change in changing if not stored[change.agent.id]]
        health_changes = insert_first_inventories(
            session,
            [
                FirstInventory(change.agent.id, change.agent.name, change.reported, change.now)
                for change in first
            ],
        )
        for change in first:
            outcomes[change.outcome] = InventoryDiff(added=list(change.reported))
        later = [change for change in changing if stored[change.agent.id]]
        devices = load_devices(
            session,
            [
                uuid
                for change in later
                for uuid in rewritten[change.agent.id] | vanishing[change.agent.id]
            ],
        )
        # One flush at the commit: inserts of the whole batch go out together.
        with session.no_autoflush:
            for change in later:
                agent = change.agent
                outcomes[change.outcome] = apply_report(
                    session,
                    agent,
                    stored[agent.id],
                    devices,
                    change.reported,
                    change.now,
                    vanishing[agent.id],
                    health_changes,
                )
        if health_changes:
            hostnames = {
                str(uuid): change.agent.name for change in changing for uuid in change.reported
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
