"""Setup operations in the database: accepted once, driven by one conductor, finished once.

An operation is accepted only for hardware that can take it: present, on an UP
agent, of a kind that has the action, and not allocated to anyone. One unfinished
operation per device is the database's rule (a partial unique index), so two apis
or conductors racing for the same device cannot both win. The conductor that
accepted an operation drives it; when that conductor stops reporting in, another
takes the operation over, which is safe because a driver runs the same operation
uuid once.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.sync_schedule import sync_in_full_now
from accel.db.commit_deadline import commit_in_time, lock_for_writing
from accel.db.conductor_liveness import alive_at
from accel.db.models import Agent, AttachHandle, Conductor, Deployable, Device, Operation
from accel.db.operation_view import operation_view
from accel.errors import Conflict, InvalidInput, NotFound
from accel.internal.schemas import HardwareEntry, Kind
from accel.internal.setup_schemas import (
    CreateMigInstance,
    EnableVfs,
    OperationRequest,
    OperationView,
    ProgramFpga,
    SetMigMode,
    SetupAction,
    SetupCall,
    SetupProgress,
)
from accel.states import OPERATION_FINAL, OPERATION_UNFINISHED, AgentState, OperationState

ACTION_KINDS: dict[type[SetupAction], frozenset[Kind]] = {
    EnableVfs: frozenset(Kind),
    ProgramFpga: frozenset({Kind.FPGA}),
    SetMigMode: frozenset({Kind.GPU}),
    CreateMigInstance: frozenset({Kind.GPU}),
}


@dataclass(frozen=True)
class OperationWork:
    """An unfinished operation and where to reach the node that runs it."""

    uuid: str
    state: OperationState
    agent_endpoint: str
    call: SetupCall


def accept(
    sessions: sessionmaker[Session],
    request: OperationRequest,
    conductor: str,
    now: dt.datetime,
    commit_before: float | None = None,
) -> OperationView:
    """Stores a new PENDING operation, or says exactly why the device cannot take it.

    The device's row is locked while it is checked and the operation stored, and
    nothing commits past ``commit_before`` (TooLate): an api that gave up looks for
    the operation under the same lock (accel.api.conductor_link)."""
    try:
        with sessions.begin() as session:
            lock_for_writing(session)
            device = session.scalar(
                select(Device).where(Device.uuid == str(request.device_uuid)).with_for_update()
            )
            if device is None:
                raise NotFound(f"device {request.device_uuid} not found")
            _check_device(session, device, request)
            operation = Operation(
                device_id=device.id,
                device_uuid=device.uuid,
                deployable_uuid=str(request.deployable_uuid) if request.deployable_uuid else None,
                agent_name=device.agent.name,
                address=device.pci_address or "",
                kind=device.type,
                action=request.setup.action,
                params_json=request.setup.model_dump_json(),
                dry_run=request.dry_run,
                state=OperationState.PENDING,
                steps_json="[]",
                reboot_required=False,
                requested_by=request.requested_by,
                project_id=request.project_id,
                conductor=conductor,
                created_at=now,
                updated_at=now,
            )
            session.add(operation)
            session.flush()
            commit_in_time(session, commit_before)
            return operation_view(operation)
    except IntegrityError:
        with sessions() as session:
            running = session.scalar(
                select(Operation.uuid).where(
                    Operation.device_uuid == str(request.device_uuid),
                    Operation.state.in_(OPERATION_UNFINISHED),
                )
            )
        raise Conflict(
            f"device {request.device_uuid} already has an unfinished operation {running}; "
            "wait for it to finish"
        ) from None


def _check_device(session: Session, device: Device, request: OperationRequest) -> None:
    setup = request.setup
    if not device.present:
        raise Conflict(f"device {device.uuid} has vanished from {device.hostname}")
    if device.agent.state != AgentState.UP:
        raise Conflict(f"the agent of {device.hostname} is {device.agent.state}; it cannot act")
    if not device.pci_address:
        raise InvalidInput(f"device {device.uuid} has no PCI address to act on")
    kind = Kind(device.type)
    if kind not in ACTION_KINDS[type(setup)]:
        raise InvalidInput(f"{setup.action} is not an action for a {kind.value} device")
    deployables = select(Deployable.id).where(Deployable.device_id == device.id)
    if request.deployable_uuid is not None and not session.scalar(
        select(exists().where(Deployable.uuid == str(request.deployable_uuid))).where(
            Deployable.device_id == device.id
        )
    ):
        raise NotFound(f"deployable {request.deployable_uuid} is not part of device {device.uuid}")
    allocated = session.scalar(
        select(exists().where(AttachHandle.deployable_id.in_(deployables), AttachHandle.in_use))
    )
    if allocated and not request.dry_run:
        raise Conflict(
            f"device {device.uuid} is allocated to a workload; unbind its accelerator "
            "requests before changing it"
        )
    if isinstance(setup, EnableVfs):
        hardware = HardwareEntry.model_validate_json(device.hardware)
        if hardware.sriov is None:
            raise InvalidInput(f"device {device.uuid} ({device.pci_address}) has no SR-IOV")
        if setup.num_vfs > hardware.sriov.total_vfs:
            raise InvalidInput(
                f"num_vfs {setup.num_vfs} is more than the {hardware.sriov.total_vfs} virtual "
                f"functions device {device.uuid} supports (sriov_totalvfs)"
            )


ANY_UNFINISHED = select(exists().where(Operation.state.in_(OPERATION_UNFINISHED)))


def unfinished(
    sessions: sessionmaker[Session], conductor: str, now: dt.datetime
) -> list[OperationWork]:
    """Operations this conductor drives, taking over those of conductors whose records
    no longer vouch for them at ``now``."""
    with sessions.begin() as session:
        # The usual answer, twice a second: none at all, from one prebuilt read.
        if not session.scalar(ANY_UNFINISHED):
            return []
        silent = select(Conductor.name).where(~alive_at(now))
        orphaned = (
            Operation.state.in_(OPERATION_UNFINISHED),
            Operation.conductor != conductor,
            or_(Operation.conductor.in_(silent), Operation.conductor.is_(None)),
        )
        # Looked for before the UPDATE: this runs twice a second, and on SQLite even
        # an UPDATE that changes nothing takes the write lock that syncs wait for.
        if session.scalar(select(exists().where(*orphaned))):
            session.execute(update(Operation).where(*orphaned).values(conductor=conductor))
        rows = session.execute(
            select(Operation, Agent.endpoint)
            .join(Agent, Agent.name == Operation.agent_name)
            .where(Operation.state.in_(OPERATION_UNFINISHED), Operation.conductor == conductor)
            .order_by(Operation.id)
            .limit(1000)
        ).all()
        return [
            OperationWork(
                operation.uuid,
                operation.state,
                endpoint,
                SetupCall.model_validate(
                    {
                        "operation": operation.uuid,
                        "kind": operation.kind,
                        "address": operation.address,
                        "setup": json.loads(operation.params_json),
                        "dry_run": operation.dry_run,
                    }
                ),
            )
            for operation, endpoint in rows
        ]


def record_progress(
    sessions: sessionmaker[Session], progress: SetupProgress, now: dt.datetime
) -> None:
    """Writes what the driver reports; a finished real change asks for a resync now."""
    with sessions.begin() as session:
        operation = session.scalar(
            select(Operation).where(Operation.uuid == str(progress.operation)).with_for_update()
        )
        if operation is None or operation.state in OPERATION_FINAL:
            return
        operation.state = progress.state
        operation.steps_json = json.dumps(progress.steps)
        operation.error = progress.error
        operation.reboot_required = progress.reboot_required
        operation.updated_at = now
        if progress.state in OPERATION_FINAL:
            operation.finished_at = now
            if not operation.dry_run:
                _resync_soon(session, operation, now)


def fail(sessions: sessionmaker[Session], uuid: str, reason: str, now: dt.datetime) -> None:
    with sessions.begin() as session:
        operation = session.scalar(
            select(Operation).where(Operation.uuid == uuid).with_for_update()
        )
        if operation is None or operation.state in OPERATION_FINAL:
            return
        operation.state = OperationState.FAILED
        operation.error = reason[:2000]
        operation.updated_at = now
        operation.finished_at = now


def _resync_soon(session: Session, operation: Operation, now: dt.datetime) -> None:
    """The hardware has changed: the node's inventory is rediscovered (the schedule's
    rule 8)."""
    agent = session.scalar(
        select(Agent).where(Agent.name == operation.agent_name).with_for_update()
    )
    if agent is not None:
        sync_in_full_now(agent, now)
