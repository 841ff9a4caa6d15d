"""The public API described as OpenAPI 3.0, served at ``/openapi.json``.

The response schemas are generated from pydantic models of Cyborg's shapes, so the
document and the fuzz tests (tests/api/test_fuzz.py, schemathesis) check the
answers field by field, and every error code an operation can give is listed.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from accel.api.health import DatabaseState
from accel.api.microversions import MAX_MICROVERSION, text

UUID_PATH = {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string"}}
KEY_PATH = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
ERRORS = ("400", "401", "403", "404", "406", "409", "413", "415", "423", "429", "501", "503")


class Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Link(Shape):
    href: str
    rel: str


class HealthCheck(Shape):
    check: str
    severity: str
    value: str
    first_seen: str
    last_seen: str
    count: int
    latch: bool = False


class Health(Shape):
    state: str
    since: str | None
    checks: list[HealthCheck]
    reason: str
    latched_by: str | None = None
    latched_at: str | None = None
    cleared_at: str | None = None
    failed_functions: list[str] | None = None
    held_by_brake: bool | None = None


class ClearedHealth(Shape):
    uuid: str
    health: Health


class ConfirmedFailures(Shape):
    taken_out_of_service: int


class Device(Shape):
    uuid: str
    type: str
    vendor: str
    model: str
    std_board_info: str | None
    vendor_board_info: str | None
    hostname: str
    status: str | None = None
    created_at: str | None
    updated_at: str | None
    links: list[Link]
    health: Health


class Deployable(Shape):
    uuid: str
    parent_id: int | None
    root_id: int | None
    name: str
    num_accelerators: int
    device_id: int
    rp_uuid: str | None
    driver_name: str | None
    bitstream_id: str | None
    attributes_list: str
    created_at: str | None
    updated_at: str | None
    links: list[Link]


class Attribute(Shape):
    uuid: str
    deployable_id: int
    key: str
    value: str
    created_at: str | None
    updated_at: str | None
    links: list[Link]


class DeviceProfile(Shape):
    uuid: str
    name: str
    description: str | None
    groups: list[dict[str, str]]
    created_at: str | None
    updated_at: str | None
    links: list[Link]


class AcceleratorRequest(Shape):
    uuid: str
    state: str
    device_profile_name: str
    device_profile_group_id: int
    hostname: str | None
    device_rp_uuid: str | None
    instance_uuid: str | None
    project_id: str | None
    attach_handle_type: str
    attach_handle_uuid: str | None
    attach_handle_info: dict[str, str]
    bind_failure_reason: str | None = None
    created_at: str | None
    updated_at: str | None
    links: list[Link]


class Agent(Shape):
    name: str
    endpoint: str
    state: str
    last_seen: str
    last_synced_at: str | None
    last_sync_error: str | None
    internal_version: str | None
    created_at: str | None


class Alarm(Shape):
    uuid: str
    kind: str
    subject: str
    state: str
    raised_at: str | None
    cleared_at: str | None
    message: str


class Devices(Shape):
    devices: list[Device]


class Deployables(Shape):
    deployables: list[Deployable]


class Attributes(Shape):
    attributes: list[Attribute]


class DeviceProfiles(Shape):
    device_profiles: list[DeviceProfile]


class OneDeviceProfile(Shape):
    device_profile: DeviceProfile


class AcceleratorRequests(Shape):
    arqs: list[AcceleratorRequest]


class Agents(Shape):
    agents: list[Agent]


class Alarms(Shape):
    alarms: list[Alarm]


class PlacementNode(Shape):
    node: str
    root_uuid: str | None
    providers: int
    held_by_allocations: list[str]
    pending: bool
    reported_at: str | None
    checked_at: str | None
    next_try_at: str | None
    failures: int
    last_error: str | None


class PlacementStatus(Shape):
    nodes: list[PlacementNode]


class Operation(Shape):
    uuid: str
    device_uuid: str
    deployable_uuid: str | None
    hostname: str
    address: str
    kind: str
    action: str
    params: dict[str, Any]
    dry_run: bool
    state: str
    steps: list[str]
    error: str | None
    reboot_required: bool
    requested_by: str | None
    created_at: str
    updated_at: str | None
    finished_at: str | None
    links: list[Link]


class OneOperation(Shape):
    operation: Operation


class Operations(Shape):
    operations: list[Operation]


class ProgrammedDeployable(Deployable):
    operation: Operation


class Hardware(Shape):
    hardware: list[dict[str, Any]]


class Conductor(Shape):
    name: str
    endpoint: str
    started_at: str | None
    last_seen: str | None
    alive_until: str | None
    alive: bool
    sync_leases: list[str]
    synced_agents: list[str]


class Conductors(Shape):
    conductors: list[Conductor]


class NewAttribute(Shape):
    deployable_id: int
    key: str = Field(min_length=1, max_length=255)
    value: str = Field(max_length=4096)


class NewRequests(Shape):
    device_profile_name: str


MODELS: list[type[BaseModel]] = [
    Link,
    HealthCheck,
    Health,
    ClearedHealth,
    ConfirmedFailures,
    Operation,
    OneOperation,
    Operations,
    ProgrammedDeployable,
    Device,
    Deployable,
    Attribute,
    DeviceProfile,
    AcceleratorRequest,
    Agent,
    Alarm,
    Devices,
    Deployables,
    Attributes,
    DeviceProfiles,
    OneDeviceProfile,
    AcceleratorRequests,
    Agents,
    Alarms,
    Hardware,
    Conductor,
    Conductors,
    NewAttribute,
    NewRequests,
]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _query(*names: str) -> list[dict[str, Any]]:
    return [
        {"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in names
    ]


# No token needed; 503 while the api cannot read its database (accel.api.health).
HEALTH = {
    "description": "whether the api can read its database now",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["database"],
                "properties": {
                    "database": {"type": "string", "enum": list(get_args(DatabaseState))}
                },
            }
        }
    },
}


def _operation(
    status: str,
    answer: type[BaseModel] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    error = {
        "description": "error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    responses: dict[str, Any] = dict.fromkeys(ERRORS, error)
    responses[status] = {"description": "success"}
    if answer is not None:
        responses[status]["content"] = {"application/json": {"schema": _ref(answer)}}
    operation: dict[str, Any] = {"responses": responses, "parameters": parameters or []}
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return operation


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error_message"],
            "properties": {"error_message": {"type": "string"}},
        }
    }
    for model in MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    profile_body = {
        "type": "array",
        "minItems": 1,
        "maxItems": 1,
        "items": {
            "type": "object",
            "required": ["name", "groups"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": "^[a-zA-Z0-9-_]+$", "maxLength": 255},
                "description": {"type": "string"},
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
        },
    }
    patch_body = {
        "type": "object",
        "additionalProperties": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "op": {"type": "string"},
                    "path": {"type": "string"},
                    "value": {"type": "string"},
                },
            },
        },
    }
    program_body = {"type": "array", "items": {"type": "object"}}
    paths: dict[str, Any] = {
        "/v2/devices": {"get": _operation("200", Devices, _query("type", "vendor", "hostname"))},
        "/v2/devices/{uuid}": {"get": _operation("200", Device, [UUID_PATH])},
        "/v2/devices/{uuid}/disable": {"post": _operation("200", None, [UUID_PATH])},
        "/v2/devices/{uuid}/enable": {"post": _operation("200", None, [UUID_PATH])},
        "/v2/deployables": {"get": _operation("200", Deployables)},
        "/v2/deployables/{uuid}": {"get": _operation("200", Deployable, [UUID_PATH])},
        "/v2/deployables/{uuid}/program": {
            "patch": _operation("202", ProgrammedDeployable, [UUID_PATH], program_body)
        },
        "/v2/devices/{uuid}/setup": {
            "post": _operation("202", OneOperation, [UUID_PATH], {"type": "object"})
        },
        "/v2/operations": {
            "get": _operation("200", Operations, _query("state", "device_uuid", "hostname"))
        },
        "/v2/operations/{uuid}": {"get": _operation("200", OneOperation, [UUID_PATH])},
        "/v2/attributes": {
            "get": _operation("200", Attributes, _query("deployable_id", "key")),
            "post": _operation("201", Attribute, body=_ref(NewAttribute)),
        },
        "/v2/attributes/{uuid}": {
            "get": _operation("200", Attribute, [UUID_PATH]),
            "delete": _operation("204", None, [UUID_PATH]),
        },
        "/v2/device_profiles": {
            "get": _operation("200", DeviceProfiles, _query("name")),
            "post": _operation("201", DeviceProfile, body=profile_body),
            "delete": _operation("204", None, _query("value")),
        },
        "/v2/device_profiles/{key}": {
            "get": _operation("200", OneDeviceProfile, [KEY_PATH]),
            "delete": _operation("204", None, [KEY_PATH]),
        },
        "/v2/accelerator_requests": {
            "get": _operation("200", AcceleratorRequests, _query("instance", "bind_state")),
            "post": _operation("201", AcceleratorRequests, body=_ref(NewRequests)),
            "patch": _operation("202", None, body=patch_body),
            "delete": _operation("204", None, _query("arqs", "instance")),
        },
        "/v2/accelerator_requests/{uuid}": {
            "get": _operation("200", AcceleratorRequest, [UUID_PATH]),
            "patch": _operation("202", None, [UUID_PATH], patch_body),
            "delete": _operation("204", None, [UUID_PATH]),
        },
        "/v2/hardware": {"get": _operation("200", Hardware, _query("state", "type", "node"))},
        "/v2/hardware/{uuid}/clear-health": {"post": _operation("200", ClearedHealth, [UUID_PATH])},
        "/v2/hardware/confirm-failures": {"post": _operation("200", ConfirmedFailures)},
        "/v2/agents": {"get": _operation("200", Agents)},
        "/v2/alarms": {"get": _operation("200", Alarms, _query("state"))},
        "/v2/conductors": {"get": _operation("200", Conductors)},
        "/v2/placement/status": {"get": _operation("200", PlacementStatus, _query("node"))},
        "/healthz": {"get": {"parameters": [], "responses": {"200": HEALTH, "503": HEALTH}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "accel public API (OpenStack Cyborg v2 compatible)",
            "version": text(MAX_MICROVERSION),
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(document())
