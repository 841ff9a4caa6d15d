"""accel's setup endpoints: turn hardware into accelerators, and follow how it goes.

``POST /v2/devices/{uuid}/setup`` takes one action (``enable_vfs``, ``program``,
``mig_mode``, ``create_mig_instance``) with its parameters at the top level, as in
``{"action": "enable_vfs", "num_vfs": 8}``, plus ``dry_run`` and an optional
``deployable_uuid``. A conductor accepts or refuses it (404, 409, 400 with its
reason) and the answer is 202 with the operation, whose state is then read from
``GET /v2/operations/{uuid}``. Cyborg's ``PATCH /v2/deployables/{uuid}/program``
is the same path for an FPGA, in Cyborg's JSON-patch body.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Select, select
from sqlalchemy.orm import Session, selectinload
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from accel.api.conductor_link import request_operation
from accel.api.deployables import deployable_body
from accel.api.policy import authorize
from accel.api.queries import one_by_uuid, reader, valid_uuid
from accel.api.routing import resource
from accel.db.models import Deployable, Device, Operation
from accel.db.operation_view import operation_view
from accel.errors import InvalidInput, NotFound
from accel.internal.setup_schemas import (
    BITSTREAM_NAME,
    OperationRequest,
    OperationView,
    SetupAction,
)
from accel.states import OperationState
from accel.web.bodies import read_json
from accel.web.problems import problems_text, validation_problems
from accel.web.queries import only_params

SETUP_ACTION: TypeAdapter[SetupAction] = TypeAdapter(SetupAction)
LIST_LIMIT = 1000


def operation_body(view: OperationView) -> dict[str, Any]:
    return {**view.model_dump(mode="json"), "links": [_link(str(view.uuid))]}


def _link(uuid: str) -> dict[str, str]:
    return {"href": f"/v2/operations/{uuid}", "rel": "self"}


def _accepted(view: OperationView, extra: dict[str, Any] | None = None) -> Response:
    return JSONResponse(
        {**(extra or {}), "operation": operation_body(view)},
        status_code=202,
        headers={"Location": f"/v2/operations/{view.uuid}"},
    )


def _setup_from(body: object) -> tuple[SetupAction, bool, str | None]:
    """The action, dry_run and deployable of a setup body, or 400 naming the field."""
    if not isinstance(body, dict):
        raise InvalidInput('body must be a JSON object such as {"action": "enable_vfs", ...}')
    fields = dict(body)
    dry_run = fields.pop("dry_run", False)
    if not isinstance(dry_run, bool):
        raise InvalidInput("dry_run must be true or false")
    deployable = fields.pop("deployable_uuid", None)
    if deployable is not None:
        deployable = valid_uuid(str(deployable), "deployable_uuid")
    try:
        setup = SETUP_ACTION.validate_python(fields)
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise InvalidInput(
            f"not a setup action: {problems_text(problems)}"
            " (actions: enable_vfs, program, mig_mode, create_mig_instance)",
            problems,
        ) from None
    return setup, dry_run, deployable


async def setup_device(request: Request) -> Response:
    caller = authorize(request, "accel:operation:create")
    only_params(request, ())
    device_uuid = valid_uuid(request.path_params["uuid"], "device uuid")
    setup, dry_run, deployable = _setup_from(await read_json(request))
    view = await request_operation(
        request,
        OperationRequest.model_validate(
            {
                "device_uuid": device_uuid,
                "deployable_uuid": deployable,
                "setup": setup.model_dump(),
                "dry_run": dry_run,
                "requested_by": caller.identity.user_id,
                "project_id": caller.identity.project_id,
            }
        ),
    )
    return _accepted(view)


async def program_deployable(request: Request) -> Response:
    """Cyborg's FPGA programming: the image names a bitstream in the driver's folder."""
    caller = authorize(request, "cyborg:deployable:program")
    only_params(request, ())
    uuid = valid_uuid(request.path_params["uuid"], "deployable uuid")
    bitstream = _bitstream_from_patch(await read_json(request))

    def query(session: Session) -> tuple[str, dict[str, Any]] | None:
        row = session.execute(
            select(Device.uuid, Deployable)
            .join(Device)
            .where(Deployable.uuid == uuid)
            .options(selectinload(Deployable.attributes))
        ).first()
        if row is None:
            return None
        return row[0], deployable_body(request, row[1])

    found = await reader(request).run(query)
    if found is None:
        raise NotFound(f"Deployable not found with uuid={uuid}")
    device_uuid, deployable = found
    view = await request_operation(
        request,
        OperationRequest.model_validate(
            {
                "device_uuid": device_uuid,
                "deployable_uuid": uuid,
                "setup": {"action": "program", "bitstream": bitstream},
                "requested_by": caller.identity.user_id,
                "project_id": caller.identity.project_id,
            }
        ),
    )
    return _accepted(view, deployable)


def _bitstream_from_patch(patch: object) -> str:
    usage = (
        'program with [{"op": "replace", "path": "/program", "value": '
        '[{"image_uuid": "<bitstream>"}]}]'
    )
    if not (
        isinstance(patch, list)
        and len(patch) == 1
        and isinstance(patch[0], dict)
        and patch[0].get("path") == "/program"
        and patch[0].get("op") in ("add", "replace")
        and isinstance(patch[0].get("value"), list)
        and len(patch[0]["value"]) == 1
        and isinstance(patch[0]["value"][0], dict)
    ):
        raise InvalidInput(usage)
    image = patch[0]["value"][0].get("image_uuid")
    if not isinstance(image, str):
        raise InvalidInput(usage)
    if re.match(BITSTREAM_NAME, image) is None:
        raise InvalidInput(
            f"image_uuid {image!r} must name a bitstream file in the driver's bitstream folder"
        )
    return image


def operation_rows(session: Session, params: dict[str, str]) -> list[OperationView]:
    """The newest operations first, chosen by ``state``, ``device_uuid`` and
    ``hostname`` (``/v2/operations`` and the fleet page's device history)."""
    chosen: Select[Operation] = select(Operation)
    if "state" in params:
        chosen = chosen.where(Operation.state == params["state"])
    if "device_uuid" in params:
        chosen = chosen.where(Operation.device_uuid == params["device_uuid"])
    if "hostname" in params:
        chosen = chosen.where(Operation.agent_name == params["hostname"])
    rows = session.scalars(chosen.order_by(Operation.id.desc()).limit(LIST_LIMIT))
    return [operation_view(row) for row in rows]


async def list_operations(request: Request) -> Response:
    authorize(request, "accel:operation:get")
    params = only_params(request, ("state", "device_uuid", "hostname"))
    if "state" in params and params["state"] not in list(OperationState):
        raise InvalidInput(f"query parameter state must be one of {', '.join(OperationState)}")
    if "device_uuid" in params:
        params["device_uuid"] = valid_uuid(params["device_uuid"], "device_uuid")

    views = await reader(request).run(lambda session: operation_rows(session, params))
    return JSONResponse({"operations": [operation_body(view) for view in views]})


async def get_operation(request: Request) -> Response:
    authorize(request, "accel:operation:get")
    row = await one_by_uuid(
        request, "Operation", lambda uuid: select(Operation).where(Operation.uuid == uuid)
    )
    return JSONResponse({"operation": operation_body(operation_view(row))})


routes = [
    resource("/v2/devices/{uuid}/setup", post=setup_device),
    resource("/v2/deployables/{uuid}/program", patch=program_deployable),
    resource("/v2/operations", get=list_operations),
    resource("/v2/operations/{uuid}", get=get_operation),
]
