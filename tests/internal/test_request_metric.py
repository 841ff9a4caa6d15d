"""The request-duration metric every accel server keeps, as an operator reads it."""

from __future__ import annotations

import asyncio

import httpx

from accel.internal.server import internal_app
from accel.internal.versions import VersionRange
from accel.metrics import REGISTRY

TOKEN = "request-metric-test-token-0123456789"


def served(method: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "accel_http_request_duration_seconds_count",
        {"component": "metric-test", "method": method, "status": status},
    )
    return value or 0.0


def call(method: str, path: str) -> int:
    app = internal_app("metric-test", [], TOKEN, VersionRange())

    async def once() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.request(method, path)).status_code

    return asyncio.run(once())


def test_each_answer_is_counted_by_method_and_status() -> None:
    before_ok, before_missing = served("GET", "200"), served("GET", "401")
    assert call("GET", "/") == 200
    assert call("GET", "/v1/nothing") == 401
    assert call("GET", "/") == 200
    assert served("GET", "200") == before_ok + 2
    assert served("GET", "401") == before_missing + 1


def test_a_method_nobody_uses_is_counted_as_other_not_by_its_name() -> None:
    before = served("OTHER", "405")
    for invented in ("BREW", "WHEN", "BREW"):
        assert call(invented, "/") == 405
    assert served("OTHER", "405") == before + 3
    assert served("BREW", "405") == 0
