"""``/v2/devices``: the devices of the fleet, shaped as OpenStack Cyborg's."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session, load_only
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from accel.api.cache import Render, json_bytes
from accel.api.microversions import ApiFeature, has
from accel.api.openstack import link
from accel.api.policy import authorize
from accel.api.queries import one_by_uuid, reader, valid_uuid, writer
from accel.api.routing import CachedRead
from accel.conductor.health import HEALTH_COLUMNS, HealthRow, failure_reason
from accel.conductor.health_functions import failed_functions
from accel.db.models import Device
from accel.errors import NotFound
from accel.states import DeviceStatus, HealthState
from accel.web.queries import only_params

FILTERS = ("type", "vendor", "hostname")


def timestamp(value: dt.datetime | None) -> str | None:
    return None if value is None else value.replace(microsecond=0).isoformat()


# The columns health_body reads, for queries that load only what they render.

# What a Cyborg device shows; the raw hardware report (kilobytes each) stays unloaded.
DEVICE_COLUMNS = (
    Device.id,
    Device.uuid,
    Device.type,
    Device.vendor,
    Device.model,
    Device.std_board_info,
    Device.vendor_board_info,
    Device.hostname,
    Device.status,
    Device.created_at,
    Device.updated_at,
    *HEALTH_COLUMNS,
)


DeviceRow = Row[Any]


def health_body(device: HealthRow) -> dict[str, Any]:
    """DESIGN's ``health`` object; a latch, failed VFs and the brake's hold as extras."""
    body: dict[str, Any] = {
        "state": device.health_state or HealthState.UNKNOWN,
        "since": timestamp(device.health_since),
        "checks": json.loads(device.health_checks or "[]"),
        "reason": failure_reason(device),
    }
    if device.health_latched_at is not None:
        body["latched_by"] = device.health_latched_by
        body["latched_at"] = timestamp(device.health_latched_at)
    if device.health_cleared_at is not None:
        body["cleared_at"] = timestamp(device.health_cleared_at)
    if device.health_functions:
        functions = failed_functions(device.health_functions)
        body["failed_functions"] = sorted(functions)
        latched = {function: latch for function, latch in functions.items() if latch}
        if latched:
            body["latched_functions"] = latched
    if device.health_held:
        body["held_by_brake"] = True
    return body


def device_body(request: Request, device: Device | DeviceRow) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uuid": device.uuid,
        "type": device.type,
        "vendor": device.vendor,
        "model": device.model,
        "std_board_info": device.std_board_info,
        "vendor_board_info": device.vendor_board_info,
        "hostname": device.hostname,
        "created_at": timestamp(device.created_at),
        "updated_at": timestamp(device.updated_at),
        "links": link(request, "devices", device.uuid),
        "health": health_body(device),
    }
    if has(request, ApiFeature.DEVICE_STATUS):
        body["status"] = device.status
    return body


def list_devices(request: Request) -> Render:
    params = only_params(request, (*FILTERS, "filters"))
    filters = {key: params[key] for key in FILTERS if key in params}

    def query(session: Session) -> list[DeviceRow]:
        # Plain rows, not ORM objects: a list of thousands skips an object per row.
        statement = select(*DEVICE_COLUMNS).where(Device.present.is_(True))
        for key, value in filters.items():
            statement = statement.where(getattr(Device, key) == value)
        # Cyborg: ascending id without filters, newest first with them.
        order = Device.created_at.desc() if filters else Device.id
        return list(session.execute(statement.order_by(order, Device.id)))

    async def render() -> bytes:
        devices = await reader(request).run(query)
        return json_bytes({"devices": [device_body(request, d) for d in devices]})

    return render


def get_device(request: Request) -> Render:
    async def render() -> bytes:
        device = await one_by_uuid(
            request,
            "Device",
            lambda uuid: (
                select(Device)
                .options(load_only(*DEVICE_COLUMNS))
                .where(Device.uuid == uuid, Device.present.is_(True))
            ),
        )
        return json_bytes(device_body(request, device))

    return render


async def _set_status(request: Request, status: DeviceStatus) -> Response:
    uuid = valid_uuid(request.path_params["uuid"], "device uuid")

    def change(session: Session) -> None:
        device = session.scalar(select(Device).where(Device.uuid == uuid, Device.present.is_(True)))
        if device is None:
            raise NotFound(f"Device not found with uuid={uuid}")
        device.status = status

    await writer(request).run(change)
    return Response(status_code=200)


async def disable_device(request: Request) -> Response:
    """Maintenance: the device stays listed but nothing new is allocated from it."""
    authorize(request, "cyborg:device:disable")
    only_params(request, ())
    return await _set_status(request, DeviceStatus.MAINTAINING)


async def enable_device(request: Request) -> Response:
    authorize(request, "cyborg:device:enable")
    only_params(request, ())
    return await _set_status(request, DeviceStatus.ENABLED)


routes = [
    CachedRead("/v2/devices", "cyborg:device:get_all", list_devices),
    CachedRead("/v2/devices/{uuid}", "cyborg:device:get_one", get_device),
    Route("/v2/devices/{uuid}/disable", disable_device, methods=["POST"]),
    Route("/v2/devices/{uuid}/enable", enable_device, methods=["POST"]),
]
