"""The internal API described as OpenAPI 3.0, served by each component at
``/openapi.json`` (for the fuzz tests and for whoever writes another component)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from accel.internal.arq_schemas import ArqChanges
from accel.internal.schemas import AgentHello, DriverHello
from accel.internal.setup_schemas import OperationRequest, SetupCall

ERRORS = ("400", "401", "403", "406", "413", "415", "429")
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _operation(
    status: str,
    body: type[BaseModel] | None = None,
    query: tuple[str, ...] = (),
    path: tuple[str, ...] = (),
    errors: tuple[str, ...] = (),
) -> dict[str, Any]:
    error = {
        "description": "error",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                }
            }
        },
    }
    operation: dict[str, Any] = {
        "security": BEARER,
        "parameters": [
            *(
                {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
                for name in query
            ),
            *(
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in path
            ),
        ],
        "responses": {
            **dict.fromkeys((*ERRORS, *errors), error),
            status: {
                "description": "success",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
        },
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": body.model_json_schema(ref_template="#/components/schemas/{model}")
                }
            },
        }
    return operation


DISCOVERY = {
    "/v1/discovery": {"post": _operation("202")},
    "/v1/hardware": {"get": _operation("200", query=("min_generation", "wait"))},
}
# A setup may be refused by the node (404: no such function or driver; 409: busy).
SETUP = {
    "/v1/setup": {"post": _operation("202", SetupCall, errors=("404", "409"))},
    "/v1/setup/{operation}": {"get": _operation("200", path=("operation",), errors=("404",))},
}
PATHS: dict[str, dict[str, Any]] = {
    "driver": {**DISCOVERY, **SETUP},
    "agent": {
        **DISCOVERY,
        **SETUP,
        "/v1/hello": {"post": _operation("200", DriverHello)},
        "/v1/drivers": {"get": _operation("200")},
    },
    "conductor": {
        "/v1/hello": {"post": _operation("200", AgentHello)},
        "/v1/accelerator_requests": {"post": _operation("200", ArqChanges)},
        "/v1/operations": {"post": _operation("202", OperationRequest, errors=("404", "409"))},
    },
}


def document(component: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (AgentHello, ArqChanges, DriverHello, SetupCall, OperationRequest):
        schemas.update(
            model.model_json_schema(ref_template="#/components/schemas/{model}").get("$defs", {})
        )
    return {
        "openapi": "3.0.3",
        "info": {"title": f"accel {component}, internal API", "version": "1"},
        "paths": PATHS[component],
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
