"""Query parameters are read the same strict way by the public API and the internal
services (accel.web.queries): unknown, repeated, empty or NUL-bearing parameters are
a 400 naming them."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accel.internal.server import internal_app
from accel.internal.versions import VersionRange
from accel.web.queries import only_params, query_float, query_int

TOKEN = "web-queries-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def echo(request: Request) -> Response:
    params = only_params(request, ("wait", "min_generation"))
    wait = query_float(request, "wait", 0.0, 60.0)
    wanted = query_int(request, "min_generation", 0, 0, 100)
    return JSONResponse({"params": params, "wait": wait, "min_generation": wanted})


async def bare(request: Request) -> Response:
    return JSONResponse(only_params(request))


APP = internal_app(
    "test",
    [Route("/v1/echo", echo, methods=["GET"]), Route("/v1/bare", bare, methods=["GET"])],
    TOKEN,
    VersionRange(),
)


def get(url: str) -> httpx.Response:
    async def once() -> httpx.Response:
        transport = httpx.ASGITransport(app=APP)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(url, headers=AUTH)

    return asyncio.run(once())


def test_known_parameters_are_read() -> None:
    answer = get("/v1/echo?wait=1.5&min_generation=3")
    assert answer.status_code == 200
    assert answer.json() == {
        "params": {"wait": "1.5", "min_generation": "3"},
        "wait": 1.5,
        "min_generation": 3,
    }
    assert get("/v1/bare").json() == {}


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("/v1/echo?wait=1&wait=2", "wait is given more than once"),
        ("/v1/echo?other=1", "unknown query parameter(s): other; allowed: min_generation, wait"),
        ("/v1/bare?other=1", "other; this takes no query parameters"),
        ("/v1/echo?wait=", "wait is empty"),
        ("/v1/echo?wait=%00", "query parameter wait contains a NUL character"),
        ("/v1/echo?wait=61", "wait must be between 0 and 60.0"),
        ("/v1/echo?min_generation=x", "min_generation must be an integer"),
    ],
)
def test_a_bad_query_is_a_400_naming_it(url: str, named: str) -> None:
    answer = get(url)
    assert answer.status_code == 400
    assert named in answer.json()["error"]
