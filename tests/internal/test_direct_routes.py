"""Endpoints answered straight from the gate (a conductor's hello) keep every rule
of the others: the token, the version echoed, JSON error bodies, 405s."""

from __future__ import annotations

import asyncio

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accel.errors import InvalidInput
from accel.internal.server import internal_app
from accel.internal.versions import HEADER, VersionRange

TOKEN = "direct-routes-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def hello(request: Request) -> Response:
    document = await request.json()
    if document.get("fail") == "input":
        raise InvalidInput("name is missing")
    if document.get("fail") == "bug":
        raise RuntimeError("a bug")
    return JSONResponse({"hello": document["name"]})


def call(method: str, path: str, **kwargs: object) -> httpx.Response:
    app = internal_app(
        "test",
        [Route("/v1/hello", hello, methods=["POST"])],
        TOKEN,
        VersionRange(),
        direct=("/v1/hello",),
    )

    async def once() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(once())


def test_a_direct_endpoint_answers_behind_the_gate_with_the_version_echoed() -> None:
    headers = {**AUTH, HEADER: "1.3"}
    answer = call("POST", "/v1/hello", json={"name": "node1"}, headers=headers)
    assert answer.status_code == 200 and answer.json() == {"hello": "node1"}
    assert answer.headers[HEADER] == "1.3"


def test_a_direct_endpoint_refuses_a_caller_without_the_token() -> None:
    answer = call("POST", "/v1/hello", json={"name": "node1"})
    assert answer.status_code == 401 and "token" in answer.json()["error"]


def test_its_errors_have_json_bodies_as_on_any_other_route() -> None:
    refused = call("POST", "/v1/hello", json={"name": "n", "fail": "input"}, headers=AUTH)
    assert refused.status_code == 400 and refused.json()["error"] == "name is missing"
    # Starlette's own error layer would answer a bug in plain text; this is not it.
    broken = call("POST", "/v1/hello", json={"name": "n", "fail": "bug"}, headers=AUTH)
    assert broken.status_code == 500 and broken.json() == {"error": "internal error"}


def test_another_method_on_a_direct_path_goes_on_to_the_router() -> None:
    answer = call("GET", "/v1/hello", headers=AUTH)
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"
    assert "error" in answer.json()
