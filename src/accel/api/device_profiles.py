"""``/v2/device_profiles``: named lists of request groups, as Nova's flavors name them.

A group is a flat dict of ``resources:<RC>`` (a count), ``trait:CUSTOM_<NAME>``
(``required`` or ``forbidden``) and ``accel:<key>`` (free-form); group order is kept,
because Nova numbers request groups by it.
"""

from __future__ import annotations

import json
import re
import uuid as uuid_module
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from accel.api.accelerator_requests import MAX_ARQS_PER_PROFILE, units_per_group
from accel.api.devices import timestamp
from accel.api.microversions import ApiFeature, require
from accel.api.openstack import link
from accel.api.policy import authorize
from accel.api.queries import comma_list, reader, writer
from accel.api.routing import resource
from accel.db.models import AcceleratorRequest, DeviceProfile
from accel.errors import (
    Conflict,
    InvalidInput,
    NotFound,
)
from accel.web.bodies import read_json
from accel.web.nul import refuse_nul
from accel.web.queries import only_params

NAME = re.compile(r"^[a-zA-Z0-9-_]+$")
STANDARD_RESOURCE_CLASSES = frozenset(
    {"FPGA", "GPU", "VGPU", "PGPU", "CUSTOM_QAT", "CUSTOM_NIC", "CUSTOM_SSD"}
)
MAX_GROUPS = 64
MAX_KEYS = 64


def validate_groups(groups: Any) -> list[dict[str, str]]:
    """Groups as Cyborg accepts them, keys and values as strings; InvalidInput if not."""
    if not isinstance(groups, list) or not groups:
        raise InvalidInput("a device profile needs a non-empty list of groups")
    if len(groups) > MAX_GROUPS:
        raise InvalidInput(f"a device profile has at most {MAX_GROUPS} groups")
    return [_validate_group(index, group) for index, group in enumerate(groups)]


def _validate_group(index: int, group: Any) -> dict[str, str]:
    if not isinstance(group, dict) or len(group) > MAX_KEYS:
        raise InvalidInput(f"group {index} must be an object of at most {MAX_KEYS} keys")
    checked: dict[str, str] = {}
    for raw_key, raw_value in group.items():
        if isinstance(raw_value, bool) or not isinstance(raw_value, str | int):
            raise InvalidInput(f"group {index}: {raw_key} must be a string")
        key, value = str(raw_key), str(raw_value).strip()
        if key.startswith("resources:"):
            resource_class = key.removeprefix("resources:").strip()
            if resource_class not in STANDARD_RESOURCE_CLASSES and not (
                resource_class.startswith("CUSTOM_")
            ):
                raise InvalidInput(
                    f"group {index}: resource class {resource_class!r} is "
                    "neither a standard one nor CUSTOM_*"
                )
            try:
                count = int(value)
            except ValueError as exc:
                raise InvalidInput(f"group {index}: {key} must be an integer") from exc
            if count < 1:
                raise InvalidInput(f"group {index}: {key} must be at least 1")
            checked[f"resources:{resource_class}"] = str(count)
        elif key.startswith("trait:"):
            trait = key.removeprefix("trait:").strip()
            if not trait.startswith("CUSTOM_"):
                raise InvalidInput(f"group {index}: trait {trait!r} must start with CUSTOM_")
            if value not in ("required", "forbidden"):
                raise InvalidInput(f"group {index}: {key} must be required or forbidden")
            checked[f"trait:{trait}"] = value
        elif key.startswith("accel:"):
            checked[key] = value
        else:
            raise InvalidInput(
                f"group {index}: key {key!r} must start with resources:, trait: or accel:"
            )
    if not any(key.startswith("resources:") for key in checked):
        raise InvalidInput(f"group {index} asks for no resources:")
    return checked


def profile_body(request: Request, profile: DeviceProfile) -> dict[str, Any]:
    return {
        "uuid": profile.uuid,
        "name": profile.name,
        "description": profile.description,
        "groups": json.loads(profile.profile_json)["groups"],
        "created_at": timestamp(profile.created_at),
        "updated_at": timestamp(profile.updated_at),
        "links": link(request, "device_profiles", profile.uuid),
    }


async def list_profiles(request: Request) -> Response:
    authorize(request, "cyborg:device_profile:get_all")
    params = only_params(request, ("name",))
    names = comma_list(params["name"], "device profile names") if "name" in params else None

    def query(session: Session) -> list[DeviceProfile]:
        statement = select(DeviceProfile).order_by(DeviceProfile.id)
        if names is not None:
            statement = statement.where(DeviceProfile.name.in_(names))
        return list(session.scalars(statement))

    profiles = await reader(request).run(query)
    return JSONResponse({"device_profiles": [profile_body(request, p) for p in profiles]})


def _is_uuid(text: str) -> bool:
    try:
        uuid_module.UUID(text)
    except ValueError:
        return False
    return True


async def get_profile(request: Request) -> Response:
    authorize(request, "cyborg:device_profile:get_one")
    only_params(request, ())
    key = request.path_params["key"]
    refuse_nul(key, "device profile")
    by_uuid = _is_uuid(key)
    if not by_uuid:
        require(request, ApiFeature.PROFILE_BY_NAME, "a device profile by name")
    column = DeviceProfile.uuid if by_uuid else DeviceProfile.name

    def query(session: Session) -> DeviceProfile | None:
        return session.scalar(select(DeviceProfile).where(column == key))

    profile = await reader(request).run(query)
    if profile is None:
        raise NotFound(f"Device profile not found with {'uuid' if by_uuid else 'name'}={key}")
    return JSONResponse({"device_profile": profile_body(request, profile)})


async def create_profile(request: Request) -> Response:
    authorize(request, "cyborg:device_profile:create")
    only_params(request, ())
    document = await read_json(request)
    if not isinstance(document, list) or len(document) != 1 or not isinstance(document[0], dict):
        raise InvalidInput("Only one device profile allowed per POST request for now.")
    item: dict[str, Any] = document[0]
    unknown = set(item) - {"name", "groups", "description", "uuid"}
    if unknown:
        raise InvalidInput(f"unknown device profile field(s): {', '.join(sorted(unknown))}")
    name = item.get("name")
    if not isinstance(name, str) or not NAME.match(name) or len(name) > 255:
        raise InvalidInput("a device profile needs a name of letters, digits, - and _")
    if _is_uuid(name):
        # /v2/device_profiles/{key} reads a key that parses as a UUID as one.
        raise InvalidInput(f"a device profile name must not read as a UUID: {name}")
    description = item.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidInput("description must be a string")
    profile_uuid = item.get("uuid") or str(uuid_module.uuid4())
    if not isinstance(profile_uuid, str) or not _is_uuid(profile_uuid):
        raise InvalidInput("uuid must be a UUID")
    groups = validate_groups(item.get("groups"))
    if sum(units_per_group(groups)) > MAX_ARQS_PER_PROFILE:
        # Refused now rather than failing every accelerator request made from it.
        raise InvalidInput(
            f"device profile {name} asks for more than {MAX_ARQS_PER_PROFILE} accelerators,"
            " more than one accelerator request may"
        )
    profile = DeviceProfile(
        uuid=str(uuid_module.UUID(profile_uuid)),
        name=name,
        description=description,
        profile_json=json.dumps({"groups": groups}),
    )

    def store(session: Session) -> DeviceProfile:
        session.add(profile)
        try:
            session.flush()
        except IntegrityError as exc:
            raise Conflict(
                f"a device profile named {name} (or with uuid {profile.uuid}) exists already"
            ) from exc
        return profile

    stored = await writer(request).run(store)
    return JSONResponse(profile_body(request, stored), status_code=201)


async def delete_profiles(request: Request) -> Response:
    authorize(request, "cyborg:device_profile:delete")
    key = request.path_params.get("key")
    params = only_params(request, ("value",))
    text = key if key is not None else params.get("value", "")
    refuse_nul(text, "device profile")
    keys = text.split(",")
    if not all(keys):
        raise InvalidInput(
            "name the device profiles to delete: /{uuid}, /{name,...} or ?value=name,..., "
            "with no empty name"
        )

    def remove(session: Session) -> None:
        # A profile named twice (by its name, by its uuid) is deleted once: looked up
        # again after its deletion, it was "not found" and the whole delete a 404.
        found: dict[int, DeviceProfile] = {}
        for one in keys:
            column = DeviceProfile.uuid if _is_uuid(one) else DeviceProfile.name
            profile = session.scalar(select(DeviceProfile).where(column == one))
            if profile is None:
                raise NotFound(f"Device profile not found with key={one}")
            found[profile.id] = profile
        for profile in found.values():
            in_use = session.scalar(
                select(AcceleratorRequest.uuid)
                .where(AcceleratorRequest.device_profile_id == profile.id)
                .limit(1)
            )
            if in_use is not None:
                raise Conflict(
                    f"device profile {profile.name} is used by accelerator request {in_use}"
                )
            session.execute(delete(DeviceProfile).where(DeviceProfile.id == profile.id))

    await writer(request).run(remove)
    return Response(status_code=204)


routes = [
    resource("/v2/device_profiles", get=list_profiles, post=create_profile, delete=delete_profiles),
    resource("/v2/device_profiles/{key}", get=get_profile, delete=delete_profiles),
]
