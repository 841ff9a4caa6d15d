"""How a stored setup operation reads on the wire, for the conductor and the api alike."""

from __future__ import annotations

import json

from accel.db.models import Operation
from accel.internal.setup_schemas import OperationView


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
