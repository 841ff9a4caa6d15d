"""The public API described as OpenAPI 3.0, served at ``/openapi.json``.

The response schemas are generated from the pydantic models of accel.api.shapes, so
the document and the fuzz tests (tests/api/test_fuzz.py, schemathesis) check the
answers field by field, and every error code an operation can give is listed. The
fleet page's views are read from the route table itself (its ``Page`` routes,
accel.api.ui.views): each with its path and query parameters, answered as
``text/html`` (or 304 while unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, get_args

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from accel.api.health import DatabaseState
from accel.api.microversions import MAX_MICROVERSION, text
from accel.api.shapes import (
    MODELS,
    AcceleratorRequest,
    AcceleratorRequests,
    Agents,
    Alarms,
    Attribute,
    Attributes,
    ClearedHealth,
    Conductors,
    ConfirmedFailures,
    Deployable,
    Deployables,
    Device,
    DeviceProfile,
    DeviceProfiles,
    Devices,
    Hardware,
    NewAttribute,
    NewRequests,
    OneDeviceProfile,
    OneOperation,
    Operations,
    PlacementStatus,
    ProgrammedDeployable,
)
from accel.api.ui.views import Page

UUID_PATH = {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string"}}
KEY_PATH = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
ERRORS = ("400", "401", "403", "404", "406", "409", "413", "415", "423", "429", "501", "503")


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


PAGE_PART = {
    "name": "Accel-UI-Part",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "content: the view's content alone (the page's refresh); else the page",
}
HTML = {"text/html": {"schema": {"type": "string"}}}


def _page(route: Page) -> dict[str, Any]:
    path = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.param_convertors
    ]
    operation = _operation("200", None, [*path, *_query(*route.view.query), PAGE_PART])
    responses = operation["responses"]
    responses["200"] = {"description": "the page, or its content alone", "content": HTML}
    responses["304"] = {"description": "unchanged since the ETag in If-None-Match"}
    # A navigation without a token gets the page's frame and a token form.
    responses["401"] = {
        "description": "no valid token: the frame and a token form, or the error",
        "content": {**HTML, **responses["401"]["content"]},
    }
    return {"get": {"summary": route.view.summary, **operation}}


def pages(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The fleet page's views among ``routes`` (the api's one route table)."""
    return {route.path: _page(route) for route in routes if isinstance(route, Page)}


def document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The document of the api serving ``routes`` (accel.api.app.ROUTES)."""
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
    paths.update(pages(routes))
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
    return JSONResponse(document(request.app.routes))
