"""The one mapping from an error to an answer (accel.web.errors): the public API and
the internal services give every exception the same status, each in its own body,
whether it is raised in a route, before routing, or in a direct internal route."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from accel.api.failures import HANDLERS, Failures
from accel.conductor.service import CONDUCTOR_ERRORS
from accel.errors import Conflict, FieldProblem, InvalidInput, NotFound, Unavailable
from accel.internal.server import internal_app
from accel.internal.versions import VersionRange

TOKEN = "web-errors-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ERRORS: dict[str, Exception] = {
    "invalid": InvalidInput("bad field", [FieldProblem("name", "is missing")]),
    "missing": NotFound("no such thing"),
    "conflict": Conflict("already there"),
    "unavailable": Unavailable("no live conductor"),
    "outage": OperationalError("SELECT secret FROM t", {}, Exception("refused")),
    "full": sqlite3.OperationalError("database or disk is full"),
    "bug": RuntimeError("a bug"),
}
STATUS = {
    "invalid": 400,
    "missing": 404,
    "conflict": 409,
    "unavailable": 503,
    "outage": 503,
    "full": 503,
    "bug": 500,
}


async def raising(request: Request) -> Response:
    raise ERRORS[request.path_params.get("name") or request.query_params["name"]]


def public_app() -> ASGIApp:
    return Failures(
        Starlette(routes=[Route("/v2/fail/{name}", raising)], exception_handlers=HANDLERS)
    )


def internal(direct: bool) -> ASGIApp:
    """An internal service with a database, as the conductor is."""
    route = Route("/v1/fail", raising, methods=["GET"])
    return internal_app(
        "test",
        [route],
        TOKEN,
        VersionRange(),
        direct=("/v1/fail",) if direct else (),
        errors=CONDUCTOR_ERRORS,
    )


def call(app: ASGIApp, path: str, **kwargs: Any) -> httpx.Response:
    async def once() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path, **kwargs)

    return asyncio.run(once())


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_the_public_api_answers_in_cyborgs_shape(name: str) -> None:
    answer = call(public_app(), f"/v2/fail/{name}")
    assert answer.status_code == STATUS[name]
    fault = json.loads(answer.json()["error_message"])
    assert fault["faultcode"] == ("Server" if STATUS[name] >= 500 else "Client")
    assert "secret" not in answer.text


@pytest.mark.parametrize("direct", [False, True], ids=["routed", "direct"])
@pytest.mark.parametrize("name", sorted(ERRORS))
def test_the_internal_api_answers_the_same_status_in_its_shape(name: str, direct: bool) -> None:
    answer = call(internal(direct), f"/v1/fail?name={name}", headers=AUTH)
    assert answer.status_code == STATUS[name]
    body = answer.json()
    assert isinstance(body["error"], str) and "secret" not in answer.text
    if name == "invalid":
        assert body["problems"] == [{"field": "name", "message": "is missing"}]
    if name == "bug":
        assert body == {"error": "internal error"}
