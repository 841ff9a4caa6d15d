"""Reading the JSON-patch body of ``PATCH /v2/accelerator_requests`` (bind and unbind).

``{"<arq uuid>": [{"op": "add", "path": "/hostname", "value": "compute1"}, ...]}``:
per ARQ, all ops ``add`` (bind: hostname, device_rp_uuid and instance_uuid, plus
project_id from microversion 2.1, admin only) or all ``remove`` (unbind).
"""

from __future__ import annotations

import uuid as uuid_module
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request

from accel.api.auth import RequestContext
from accel.api.microversions import ApiFeature, require
from accel.errors import Forbidden, InvalidInput
from accel.internal.arq_schemas import ArqBinding, ArqChanges
from accel.web.problems import problems_text, validation_problems

BIND_FIELDS = ("hostname", "device_rp_uuid", "instance_uuid")
MAX_ARQS_PER_PATCH = 1000


def bindings_from_patch(request: Request, caller: RequestContext, body: Any) -> ArqChanges:
    if not isinstance(body, dict) or not body:
        raise InvalidInput("the patch must map accelerator request uuids to lists of ops")
    if len(body) > MAX_ARQS_PER_PATCH:
        raise InvalidInput(f"at most {MAX_ARQS_PER_PATCH} accelerator requests per patch")
    binds, unbinds = [], []
    for arq_uuid, ops in body.items():
        try:
            arq = uuid_module.UUID(arq_uuid)
        except ValueError as exc:
            raise InvalidInput(f"{arq_uuid!r} is not an accelerator request uuid") from exc
        values = _values(request, caller, arq_uuid, ops)
        if values is None:
            unbinds.append(arq)
            continue
        missing = [field for field in BIND_FIELDS if field not in values]
        if missing:
            raise InvalidInput(f"binding {arq_uuid} needs {', '.join(missing)}")
        try:
            binds.append(ArqBinding.model_validate({"arq_uuid": arq, **values}))
        except ValidationError as exc:
            problems = validation_problems(exc)
            raise InvalidInput(f"binding {arq_uuid}: {problems_text(problems)}", problems) from exc
    return ArqChanges(bind=binds, unbind=unbinds)


def _values(
    request: Request, caller: RequestContext, arq_uuid: str, ops: Any
) -> dict[str, str] | None:
    """The fields an all-``add`` list sets, or None for an all-``remove`` list."""
    if not isinstance(ops, list) or not ops:
        raise InvalidInput(f"{arq_uuid}: ops must be a non-empty list")
    kinds = {op.get("op") if isinstance(op, dict) else None for op in ops}
    if kinds not in ({"add"}, {"remove"}):
        raise InvalidInput(f"{arq_uuid}: ops must be all add or all remove")
    allowed = {f"/{field}" for field in BIND_FIELDS} | {"/project_id"}
    values: dict[str, str] = {}
    for op in ops:
        path = op.get("path")
        if path not in allowed:
            raise InvalidInput(f"{arq_uuid}: path {path!r} cannot be patched")
        if path == "/project_id":
            require(request, ApiFeature.BIND_PROJECT_ID, "/project_id")
            if not caller.is_admin:
                raise Forbidden("only an admin may set the project_id of a request")
        if "add" in kinds:
            value = op.get("value")
            if not isinstance(value, str) or not value:
                raise InvalidInput(f"{arq_uuid}: {path} needs a string value")
            values[path.removeprefix("/")] = value
    if "remove" in kinds:
        return None
    values.setdefault("project_id", caller.identity.project_id)
    return values
