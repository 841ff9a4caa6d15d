"""Binding accelerator requests to accelerators: real allocation, never over-allocated.

A bind picks the deployable whose resource provider the caller names on the named
host, checks it is ready (device present and enabled, no setup or reboot pending,
its agent UP) and fits the request's group (its resource class asked for, required
traits present, forbidden ones absent), then takes one free attach handle with a
conditional UPDATE: of many binds racing for the last handle, exactly one wins, on
SQLite (writes serialise) and on PostgreSQL (the row lock re-checks ``in_use``).
The ARQ's unique ``attach_handle_id`` backs this up in the schema.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from accel.db.models import (
    AcceleratorRequest,
    Agent,
    AttachHandle,
    Deployable,
    Device,
    DeviceProfile,
)
from accel.errors import Conflict, NotFound
from accel.internal.schemas import ArqChanges, ArqOutcome

BINDABLE = ("Initial", "Unbound")
RESOLVED = ("Bound", "BindFailed", "Deleting")


@dataclass(frozen=True)
class Binding:
    arq_uuid: str
    hostname: str
    device_rp_uuid: str
    instance_uuid: str
    project_id: str | None


def group_of(profile: DeviceProfile, index: int) -> dict[str, str]:
    groups: list[dict[str, str]] = json.loads(profile.profile_json)["groups"]
    return groups[index]


def start_bind(sessions: sessionmaker[Session], binding: Binding, now: dt.datetime) -> None:
    """Initial or Unbound -> BindStarted, with where and for whom; Conflict otherwise."""
    with sessions.begin() as session:
        arq = session.scalar(
            select(AcceleratorRequest)
            .where(AcceleratorRequest.uuid == binding.arq_uuid)
            .with_for_update()
        )
        if arq is None:
            raise NotFound(f"Accelerator request not found with uuid={binding.arq_uuid}")
        if arq.state not in BINDABLE:
            raise Conflict(
                f"accelerator request {arq.uuid} is {arq.state}; only an Initial "
                "or Unbound request can be bound"
            )
        arq.state = "BindStarted"
        arq.hostname = binding.hostname
        arq.device_rp_uuid = binding.device_rp_uuid
        arq.instance_uuid = binding.instance_uuid
        if binding.project_id is not None:
            arq.project_id = binding.project_id
        arq.bind_failure = None
        arq.updated_at = now


def finish_bind(sessions: sessionmaker[Session], arq_uuid: str, now: dt.datetime) -> str:
    """BindStarted -> Bound with an attach handle, or BindFailed with the reason."""
    with sessions.begin() as session:
        arq = session.scalar(
            select(AcceleratorRequest).where(AcceleratorRequest.uuid == arq_uuid).with_for_update()
        )
        if arq is None or arq.state != "BindStarted":
            return arq.state if arq is not None else "Deleting"
        arq.updated_at = now
        found = session.execute(
            select(Deployable, Device, Agent.state)
            .join(Device, Deployable.device_id == Device.id)
            .join(Agent, Device.agent_id == Agent.id)
            .where(Deployable.rp_uuid == arq.device_rp_uuid, Device.hostname == arq.hostname)
        ).first()
        if found is None:
            return _fail(
                arq,
                f"no deployable with resource provider {arq.device_rp_uuid} on host {arq.hostname}",
            )
        deployable, device, agent_state = found
        reason = why_unfit(
            deployable,
            device,
            agent_state,
            group_of(arq.device_profile, arq.device_profile_group_id),
        )
        if reason is not None:
            return _fail(arq, reason)
        handle = _take_free_handle(session, deployable)
        if handle is None:
            return _fail(arq, f"deployable {deployable.name} has no free accelerator left")
        arq.attach_handle_id = handle.id
        arq.deployable_id = deployable.id
        arq.state = "Bound"
        return arq.state


def _fail(arq: AcceleratorRequest, reason: str) -> str:
    arq.state = "BindFailed"
    arq.bind_failure = reason
    return arq.state


def why_unfit(
    deployable: Deployable, device: Device, agent_state: str, group: dict[str, str]
) -> str | None:
    """Why this deployable cannot serve the group, or None if it can."""
    if not device.present:
        return f"device {device.uuid} has vanished"
    if device.status != "enabled":
        return f"device {device.uuid} is in maintenance"
    if device.setup_required or device.reboot_required:
        return f"device {device.uuid} needs setup or a reboot before use"
    if agent_state != "UP":
        return f"the agent of host {device.hostname} is DOWN"
    attributes = {a.key: a.value for a in deployable.attributes}
    traits = {value for key, value in attributes.items() if key.startswith("trait")}
    wanted = {key.removeprefix("resources:") for key in group if key.startswith("resources:")}
    if attributes.get("rc") not in wanted:
        return (
            f"deployable {deployable.name} offers {attributes.get('rc')}, the request "
            f"asks for {', '.join(sorted(wanted)) or 'nothing'}"
        )
    for key, value in group.items():
        if not key.startswith("trait:"):
            continue
        trait = key.removeprefix("trait:")
        if value == "required" and trait not in traits:
            return f"deployable {deployable.name} lacks the required trait {trait}"
        if value == "forbidden" and trait in traits:
            return f"deployable {deployable.name} has the forbidden trait {trait}"
    return None


def _take_free_handle(session: Session, deployable: Deployable) -> AttachHandle | None:
    candidates = session.scalars(
        select(AttachHandle)
        .where(AttachHandle.deployable_id == deployable.id, AttachHandle.in_use.is_(False))
        .order_by(AttachHandle.id)
    ).all()
    for handle in candidates:
        taken = session.execute(
            update(AttachHandle)
            .where(AttachHandle.id == handle.id, AttachHandle.in_use.is_(False))
            .values(in_use=True)
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            session.refresh(handle)
            return handle
    return None


def unbind(session: Session, arq: AcceleratorRequest, now: dt.datetime) -> None:
    """Frees the request's accelerator and forgets where it was bound."""
    if arq.attach_handle_id is not None:
        session.execute(
            update(AttachHandle).where(AttachHandle.id == arq.attach_handle_id).values(in_use=False)
        )
    arq.attach_handle_id = None
    arq.deployable_id = None
    arq.hostname = None
    arq.device_rp_uuid = None
    arq.instance_uuid = None
    arq.state = "Unbound"
    arq.updated_at = now


def apply_changes(
    sessions: sessionmaker[Session], changes: ArqChanges, now: dt.datetime
) -> list[ArqOutcome]:
    """Unbinds (and deletes), then binds, each request in its own transactions."""
    outcomes = []
    doomed = set(map(str, changes.delete))
    for arq_uuid in [*map(str, changes.unbind), *doomed]:
        with sessions.begin() as session:
            arq = session.scalar(
                select(AcceleratorRequest)
                .where(AcceleratorRequest.uuid == arq_uuid)
                .with_for_update()
            )
            if arq is None:
                outcomes.append(
                    ArqOutcome(uuid=arq_uuid, state="", refused=True, reason="not found")
                )
                continue
            unbind(session, arq, now)
            if arq_uuid in doomed:
                session.delete(arq)
                outcomes.append(ArqOutcome(uuid=arq_uuid, state="Deleted"))
            else:
                outcomes.append(ArqOutcome(uuid=arq_uuid, state=arq.state))
    for request in changes.bind:
        binding = Binding(
            str(request.arq_uuid),
            request.hostname,
            str(request.device_rp_uuid),
            str(request.instance_uuid),
            request.project_id,
        )
        try:
            start_bind(sessions, binding, now)
        except (NotFound, Conflict) as exc:
            outcomes.append(
                ArqOutcome(uuid=binding.arq_uuid, state="", refused=True, reason=exc.message)
            )
            continue
        state = finish_bind(sessions, binding.arq_uuid, now)
        with sessions() as session:
            reason = session.scalar(
                select(AcceleratorRequest.bind_failure).where(
                    AcceleratorRequest.uuid == binding.arq_uuid
                )
            )
        outcomes.append(ArqOutcome(uuid=binding.arq_uuid, state=state, reason=reason))
    return outcomes
