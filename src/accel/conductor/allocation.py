"""Binding accelerator requests to accelerators: real allocation, never over-allocated.

A bind picks the deployable whose resource provider the caller names on the named
host, checks it is ready (device present and enabled, no setup or reboot pending,
its agent UP, not failed by its health: conductor/health.py) and fits the request's
group (its resource class asked for, required traits present, forbidden ones absent),
then takes one free attach handle with a conditional UPDATE: of many binds racing for
the last handle, exactly one wins, on
SQLite (writes serialise) and on PostgreSQL (the row lock re-checks ``in_use``).
The ARQ's unique ``attach_handle_id`` backs this up in the schema.

A change (binds, unbinds, deletes) is one transaction that locks its requests first:
nothing half-done is ever stored, so a conductor killed at any moment leaves every
request as it was or as asked. A repeated change is answered with what was done.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.health import why_unhealthy
from accel.conductor.nova_events import queue_bound_events
from accel.conductor.placement.offer import why_not_offered
from accel.db.commit_deadline import commit_in_time, lock_for_writing, locked_requests
from accel.db.models import (
    AcceleratorRequest,
    Agent,
    AttachHandle,
    Deployable,
    Device,
    DeviceProfile,
)
from accel.internal.arq_schemas import ARQ_DELETED, ARQ_REFUSED, ArqChanges, ArqOutcome
from accel.states import ARQ_HOLDING_NOTHING, AgentState, ArqState

# Seconds a request may stay BindStarted (left by an older release) before it is failed.
ABANDONED_BIND_GRACE = 60.0


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


def _bind(session: Session, arq: AcceleratorRequest, binding: Binding) -> None:
    """A bindable request -> Bound with an attach handle, or BindFailed with the reason."""
    arq.hostname = binding.hostname
    arq.device_rp_uuid = binding.device_rp_uuid
    arq.instance_uuid = binding.instance_uuid
    if binding.project_id is not None:
        arq.project_id = binding.project_id
    arq.bind_failure = None
    found = session.execute(
        select(Deployable, Device, Agent.state)
        .join(Device, Deployable.device_id == Device.id)
        .join(Agent, Device.agent_id == Agent.id)
        .where(Deployable.rp_uuid == arq.device_rp_uuid, Device.hostname == arq.hostname)
    ).first()
    if found is None:
        _fail(
            arq, f"no deployable with resource provider {arq.device_rp_uuid} on host {arq.hostname}"
        )
        return
    deployable, device, agent_state = found
    reason = why_unfit(
        deployable, device, agent_state, group_of(arq.device_profile, arq.device_profile_group_id)
    )
    if reason is not None:
        _fail(arq, reason)
        return
    handle = _take_free_handle(session, deployable)
    if handle is None:
        _fail(arq, f"deployable {deployable.name} has no free accelerator left")
        return
    arq.attach_handle_id = handle.id
    arq.deployable_id = deployable.id
    arq.state = ArqState.BOUND


def _fail(arq: AcceleratorRequest, reason: str) -> None:
    arq.state = ArqState.BIND_FAILED
    arq.bind_failure = reason


def why_unfit(
    deployable: Deployable, device: Device, agent_state: AgentState, group: dict[str, str]
) -> str | None:
    """Why this deployable cannot serve the group, or None if it can."""
    refusal = why_not_offered(
        uuid=device.uuid,
        hostname=device.hostname,
        present=device.present,
        status=device.status,
        setup_required=device.setup_required,
        reboot_required=device.reboot_required,
        agent_state=agent_state,
    )
    if refusal is not None:
        return refusal
    unhealthy = why_unhealthy(device, deployable.name)
    if unhealthy is not None:
        return unhealthy
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
    arq.state = ArqState.UNBOUND
    arq.updated_at = now


def _refusals(
    arqs: dict[str, AcceleratorRequest], changes: ArqChanges, bindings: list[Binding]
) -> list[ArqOutcome]:
    refused = [
        ArqOutcome(uuid=str(uuid), state=ARQ_REFUSED, refused=True, reason="not found")
        for uuid in changes.unbind
        if str(uuid) not in arqs
    ]
    for binding in bindings:
        arq = arqs.get(binding.arq_uuid)
        if arq is None:
            reason = f"Accelerator request not found with uuid={binding.arq_uuid}"
        elif arq.state in ARQ_HOLDING_NOTHING or arq.resolved_as(
            binding.hostname, binding.device_rp_uuid, binding.instance_uuid
        ):
            continue
        else:
            reason = (
                f"accelerator request {arq.uuid} is {arq.state}"
                + (f" for instance {arq.instance_uuid}" if arq.instance_uuid else "")
                + f"; only an {' or '.join(ARQ_HOLDING_NOTHING)} request can be bound"
            )
        refused.append(
            ArqOutcome(uuid=binding.arq_uuid, state=ARQ_REFUSED, refused=True, reason=reason)
        )
    return refused


def apply_changes(
    sessions: sessionmaker[Session],
    changes: ArqChanges,
    now: dt.datetime,
    commit_before: float | None = None,
    notify_nova: bool = False,
) -> list[ArqOutcome]:
    """Unbinds, deletes and binds, all in one transaction, or nothing at all.

    A bind of a request already resolved exactly as asked (same host, provider and
    instance) changes nothing and answers its state: a retry, after an answer that
    was lost, learns what was done. A delete of a request already gone is done.
    ``commit_before`` (the database's clock, seconds since 1970) is when the caller
    stops listening: past it, the transaction rolls back and TooLate is raised.
    With ``notify_nova``, an instance whose requests this change resolved (all Bound
    or BindFailed) gets its Nova event queued in the same transaction.
    """
    bindings = [
        Binding(
            str(b.arq_uuid), b.hostname, str(b.device_rp_uuid), str(b.instance_uuid), b.project_id
        )
        for b in changes.bind
    ]
    doomed = list(dict.fromkeys(map(str, changes.delete)))
    unbound = list(dict.fromkeys(map(str, changes.unbind)))
    with sessions.begin() as session:
        lock_for_writing(session)
        arqs = locked_requests(session, [*unbound, *doomed, *(b.arq_uuid for b in bindings)])
        refused = _refusals(arqs, changes, bindings)
        if refused:
            return refused  # nothing was written: the transaction commits nothing
        outcomes = []
        for arq_uuid in unbound:
            unbind(session, arqs[arq_uuid], now)
            outcomes.append(ArqOutcome(uuid=arq_uuid, state=ArqState.UNBOUND))
        for arq_uuid in doomed:
            if arq_uuid in arqs:
                unbind(session, arqs[arq_uuid], now)
                session.delete(arqs[arq_uuid])
            outcomes.append(ArqOutcome(uuid=arq_uuid, state=ARQ_DELETED))
        # Binds take handles in one order (provider, then handle id): two changes that
        # bind, with requests locked in uuid order first, wait for each other on
        # PostgreSQL without a cycle.
        resolved_now = set()
        for binding in sorted(bindings, key=lambda b: (b.device_rp_uuid, b.arq_uuid)):
            arq = arqs[binding.arq_uuid]
            if arq.state in ARQ_HOLDING_NOTHING:
                _bind(session, arq, binding)
                arq.updated_at = now
                resolved_now.add(binding.instance_uuid)
            outcomes.append(ArqOutcome(uuid=arq.uuid, state=arq.state, reason=arq.bind_failure))
        session.flush()
        if notify_nova:
            # A repeated bind resolved nothing now: Nova was (or will be) told already.
            queue_bound_events(session, resolved_now, now)
        commit_in_time(session, commit_before)
        return outcomes


def fail_abandoned_binds(
    sessions: sessionmaker[Session], now: dt.datetime, grace: float
) -> list[str]:
    """Fails the binds an older conductor started and never finished.

    Releases before this one bound in two transactions, and one killed between them
    left its request BindStarted for ever (Nova's poll: 423). Such a bind is failed,
    not finished: its caller was most likely told it failed, and a request Bound
    behind its back would hold an accelerator nobody uses. The grace leaves a live
    older conductor (a rolling upgrade) time to finish its own.
    """
    abandoned = (
        AcceleratorRequest.state == ArqState.BIND_STARTED,
        or_(
            AcceleratorRequest.updated_at < now - dt.timedelta(seconds=grace),
            AcceleratorRequest.updated_at.is_(None),
        ),
    )
    with sessions.begin() as session:
        # Looked for first: on SQLite even an UPDATE that changes nothing takes the lock.
        uuids = list(session.scalars(select(AcceleratorRequest.uuid).where(*abandoned)))
        if uuids:
            session.execute(
                update(AcceleratorRequest)
                .where(AcceleratorRequest.uuid.in_(uuids), *abandoned)
                .values(
                    state=ArqState.BIND_FAILED,
                    bind_failure="the conductor binding it stopped before finishing; "
                    "unbind the request and bind it again",
                    updated_at=now,
                )
            )
    return uuids
