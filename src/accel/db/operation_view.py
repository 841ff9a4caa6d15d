"""How a stored setup operation reads on the wire, for the conductor and the api alike;
and how an api whose answer was lost finds the operation its request started."""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from accel.db.models import Operation
from accel.internal.setup_schemas import OperationRequest, OperationView


def operation_view(operation: Operation) -> OperationView:
    return OperationView.model_validate(
        {
            "uuid": operation.uuid,
            "device_uuid": operation.device_uuid,
            "deployable_uuid": operation.deployable_uuid,
            "hostname": operation.agent_name,
            "address": operation.address,
            "kind": operation.kind,
            "action": operation.action,
            "params": json.loads(operation.params_json),
            "dry_run": operation.dry_run,
            "state": operation.state,
            "steps": json.loads(operation.steps_json),
            "error": operation.error,
            "reboot_required": operation.reboot_required,
            "requested_by": operation.requested_by,
            "created_at": operation.created_at,
            "updated_at": operation.updated_at,
            "finished_at": operation.finished_at,
        }
    )


def asked_since(session: Session, request: OperationRequest, after_id: int) -> OperationView | None:
    """The operation stored for ``request`` after operation ``after_id``, if any: how a
    caller whose answer was lost finds what its request did."""
    found = session.scalar(
        select(Operation)
        .where(
            Operation.id > after_id,
            Operation.device_uuid == str(request.device_uuid),
            Operation.deployable_uuid
            == (str(request.deployable_uuid) if request.deployable_uuid else None),
            Operation.params_json == request.setup.model_dump_json(),
            Operation.dry_run == request.dry_run,
            Operation.requested_by == request.requested_by,
            Operation.project_id == request.project_id,
        )
        .order_by(Operation.id)
        .limit(1)
    )
    return operation_view(found) if found is not None else None
