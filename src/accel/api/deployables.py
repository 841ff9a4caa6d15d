"""``/v2/deployables`` and ``/v2/attributes``: what can be allocated, and its labels.

A deployable is a device's allocatable part (the device itself, or each of its
VFs); its attributes carry the resource class (``rc``) and traits (``traitN``) that
Placement schedules on. Shapes follow Cyborg, integer ``device_id`` and
``deployable_id`` and the JSON-in-a-string ``attributes_list`` included.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Protocol

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session, selectinload
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from accel.api.cache import Render, json_bytes
from accel.api.devices import timestamp
from accel.api.openstack import link, public_url
from accel.api.policy import authorize
from accel.api.queries import one_by_uuid, reader, valid_uuid, writer
from accel.api.routing import CachedRead, resource
from accel.db.models import Attribute, Deployable, Device
from accel.errors import InvalidInput, NotFound
from accel.web.bodies import read_json
from accel.web.queries import only_params

MAX_ID = 2**31  # integer keys are 32-bit on PostgreSQL


def deployable_body(request: Request, deployable: Deployable) -> dict[str, Any]:
    return _body(request, deployable, [(a.key, a.value) for a in deployable.attributes])


class DeployableFields(Protocol):
    """A Deployable, or a row of its columns: what a deployable's body shows."""

    uuid: str
    parent_id: int | None
    root_id: int | None
    name: str
    num_accelerators: int
    device_id: int
    rp_uuid: str | None
    driver_name: str | None
    bitstream_id: str | None
    created_at: dt.datetime
    updated_at: dt.datetime | None


def _body(
    request: Request, deployable: DeployableFields, attributes: list[tuple[str, str]]
) -> dict[str, Any]:
    links = link(request, "deployables", deployable.uuid)
    links.append(
        {
            "href": f"{public_url(request)}/accelerator/deployables/{deployable.uuid}",
            "rel": "bookmark",
        }
    )
    return {
        "uuid": deployable.uuid,
        "parent_id": deployable.parent_id,
        "root_id": deployable.root_id,
        "name": deployable.name,
        "num_accelerators": deployable.num_accelerators,
        "device_id": deployable.device_id,
        "rp_uuid": deployable.rp_uuid,
        "driver_name": deployable.driver_name,
        "bitstream_id": deployable.bitstream_id,
        "attributes_list": json.dumps([{key: value} for key, value in attributes]),
        "created_at": timestamp(deployable.created_at),
        "updated_at": timestamp(deployable.updated_at),
        "links": links,
    }


# The list reads plain rows in two queries (deployables, then all their attributes)
# instead of ORM objects, which a list of thousands of deployables cannot afford.
DEPLOYABLE_COLUMNS = (
    Deployable.id,
    Deployable.uuid,
    Deployable.parent_id,
    Deployable.root_id,
    Deployable.name,
    Deployable.num_accelerators,
    Deployable.device_id,
    Deployable.rp_uuid,
    Deployable.driver_name,
    Deployable.bitstream_id,
    Deployable.created_at,
    Deployable.updated_at,
)


def _present_deployables() -> Select[Deployable]:
    return (
        select(Deployable)
        .join(Device)
        .where(Device.present.is_(True))
        .options(selectinload(Deployable.attributes))
        .order_by(Deployable.id)
    )


def list_deployables(request: Request) -> Render:
    only_params(request, ("filters",))

    def query(session: Session) -> list[tuple[Any, list[tuple[str, str]]]]:
        rows = session.execute(
            select(*DEPLOYABLE_COLUMNS)
            .join(Device)
            .where(Device.present.is_(True))
            .order_by(Deployable.id)
        ).all()
        attributes: dict[int, list[tuple[str, str]]] = {}
        for deployable_id, key, value in session.execute(
            select(Attribute.deployable_id, Attribute.key, Attribute.value)
            .join(Deployable)
            .join(Device)
            .where(Device.present.is_(True))
            .order_by(Attribute.id)
        ):
            attributes.setdefault(deployable_id, []).append((key, value))
        return [(row, attributes.get(row.id, [])) for row in rows]

    async def render() -> bytes:
        found = await reader(request).run(query)
        return json_bytes({"deployables": [_body(request, row, pairs) for row, pairs in found]})

    return render


async def get_deployable(request: Request) -> Response:
    authorize(request, "cyborg:deployable:get_one")
    deployable = await one_by_uuid(
        request, "Deployable", lambda uuid: _present_deployables().where(Deployable.uuid == uuid)
    )
    return JSONResponse(deployable_body(request, deployable))


def attribute_body(request: Request, attribute: Attribute) -> dict[str, Any]:
    return {
        "uuid": attribute.uuid,
        "deployable_id": attribute.deployable_id,
        "key": attribute.key,
        "value": attribute.value,
        "created_at": timestamp(attribute.created_at),
        "updated_at": timestamp(attribute.updated_at),
        "links": link(request, "attributes", attribute.uuid),
    }


async def list_attributes(request: Request) -> Response:
    authorize(request, "cyborg:attribute:get_all")
    params = only_params(request, ("deployable_id", "key"))
    statement = select(Attribute).order_by(Attribute.id)
    if "deployable_id" in params:
        text = params["deployable_id"]
        if not (text.isascii() and text.isdigit() and int(text) < MAX_ID):
            raise InvalidInput("deployable_id must be an integer")
        statement = statement.where(Attribute.deployable_id == int(params["deployable_id"]))
    if "key" in params:
        statement = statement.where(Attribute.key == params["key"])

    def query(session: Session) -> list[Attribute]:
        return list(session.scalars(statement))

    found = await reader(request).run(query)
    return JSONResponse({"attributes": [attribute_body(request, a) for a in found]})


async def get_attribute(request: Request) -> Response:
    authorize(request, "cyborg:attribute:get_one")
    attribute = await one_by_uuid(
        request, "Attribute", lambda uuid: select(Attribute).where(Attribute.uuid == uuid)
    )
    return JSONResponse(attribute_body(request, attribute))


async def create_attribute(request: Request) -> Response:
    authorize(request, "cyborg:attribute:create")
    only_params(request, ())
    body = await read_json(request)
    if not isinstance(body, dict) or set(body) != {"deployable_id", "key", "value"}:
        raise InvalidInput('an attribute is {"deployable_id": int, "key": str, "value": str}')
    deployable_id, key, value = body["deployable_id"], body["key"], body["value"]
    if (
        isinstance(deployable_id, bool)
        or not isinstance(deployable_id, int)
        or not (0 < deployable_id < MAX_ID)
    ):
        raise InvalidInput(f"deployable_id must be an integer from 1 to {MAX_ID - 1}")
    if not (
        isinstance(key, str)
        and isinstance(value, str)
        and 0 < len(key) <= 255
        and len(value) <= 4096
    ):
        raise InvalidInput("key and value must be strings (key 1-255, value up to 4096)")

    def store(session: Session) -> Attribute:
        if session.get(Deployable, deployable_id) is None:
            raise NotFound(f"Deployable not found with id={deployable_id}")
        attribute = Attribute(deployable_id=deployable_id, key=key, value=value)
        session.add(attribute)
        session.flush()
        return attribute

    attribute = await writer(request).run(store)
    return JSONResponse(attribute_body(request, attribute), status_code=201)


async def delete_attribute(request: Request) -> Response:
    authorize(request, "cyborg:attribute:delete")
    only_params(request, ())
    uuid = valid_uuid(request.path_params["uuid"], "attribute uuid")

    def remove(session: Session) -> None:
        if not session.execute(delete(Attribute).where(Attribute.uuid == uuid)).rowcount:  # type: ignore[attr-defined]
            raise NotFound(f"Attribute not found with uuid={uuid}")

    await writer(request).run(remove)
    return Response(status_code=204)


routes = [
    CachedRead("/v2/deployables", "cyborg:deployable:get_all", list_deployables),
    resource("/v2/deployables/{uuid}", get=get_deployable),
    resource("/v2/attributes", get=list_attributes, post=create_attribute),
    resource("/v2/attributes/{uuid}", get=get_attribute, delete=delete_attribute),
]
