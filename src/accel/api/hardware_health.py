"""The operator's two health calls (the health object is ``devices.health_body``).

``POST /v2/hardware/{uuid}/clear-health`` lets a latched failure go;
``POST /v2/hardware/confirm-failures`` takes the devices the fleet brake kept in
service out of it and releases the brake. Both are the conductor's rules
(conductor/health.py), run in the api's own transaction as other admin writes are.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accel.api.devices import health_body
from accel.api.policy import authorize
from accel.api.queries import valid_uuid, writer
from accel.conductor.health import clear_health, confirm_failures
from accel.db.columns import utcnow
from accel.errors import NotFound
from accel.web.queries import only_params


async def clear_device_health(request: Request) -> Response:
    """An operator clears a latched failure; the device is judged again from its last
    report, and its alarm clears if it is well."""
    authorize(request, "accel:hardware:clear_health")
    only_params(request, ())
    uuid = valid_uuid(request.path_params["uuid"], "hardware uuid")

    def change(session: Any) -> dict[str, Any]:
        device = clear_health(session, uuid, utcnow())
        if device is None:
            raise NotFound(f"Hardware not found with uuid={uuid}")
        return {"uuid": uuid, "health": health_body(device)}

    return JSONResponse(await writer(request).run(change))


async def confirm_health_failures(request: Request) -> Response:
    authorize(request, "accel:hardware:confirm_failures")
    only_params(request, ())
    released = await writer(request).run(lambda session: confirm_failures(session, utcnow()))
    return JSONResponse({"taken_out_of_service": released})


routes = [
    Route("/v2/hardware/confirm-failures", confirm_health_failures, methods=["POST"]),
    Route("/v2/hardware/{uuid}/clear-health", clear_device_health, methods=["POST"]),
]
