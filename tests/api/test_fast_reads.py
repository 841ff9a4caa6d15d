"""Cached reads answered before routing (accel.api.fast_reads) agree with their routes:
the same policy rule, from the one route table, and the same error handling."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from accel.api.app import ROUTES, ApiSettings, create_app
from accel.api.auth import Identity
from accel.api.policy import ADMIN, ANY_ROLE, RULES
from accel.api.routing import CachedRead
from accel.db.engine import make_engine
from accel.driver.fake_sysfs import FakeSysfs
from tests.api.test_api import fill
from tests.postgres import ThrowawayPostgres

TOKENS = {
    "admin": Identity(user_id="a", project_id="p", roles=("admin",)),
    "member": Identity(user_id="m", project_id="p", roles=("member",)),
}
ADMIN_CALLS = {"X-Auth-Token": "admin"}
MEMBER_CALLS = {"X-Auth-Token": "member"}
CACHED = [route for route in ROUTES if isinstance(route, CachedRead)]


def test_the_hottest_reads_are_cached_routes() -> None:
    assert {route.path: route.rule for route in CACHED} == {
        "/v2/devices": "cyborg:device:get_all",
        "/v2/devices/{uuid}": "cyborg:device:get_one",
        "/v2/deployables": "cyborg:deployable:get_all",
    }


def filled_in(route: CachedRead, device: str) -> str:
    return route.path.format(uuid=device)


@pytest.mark.parametrize("route", CACHED, ids=lambda route: route.path)
def test_a_cached_answer_is_refused_to_whom_its_route_refuses(
    sqlite_url: str, gpu_server: FakeSysfs, route: CachedRead
) -> None:
    device = str(fill(sqlite_url, gpu_server).hardware[0].uuid)
    # Every rule lets anyone through but this route's own: a cached answer checked
    # against any other rule, or none, would reach the member.
    policy = {rule: ANY_ROLE for rule in RULES} | {route.rule: ADMIN}
    settings = ApiSettings(auth="token", tokens=TOKENS, policy=policy)
    path = filled_in(route, device)
    with TestClient(create_app(make_engine(sqlite_url), settings)) as client:
        routed = client.get(path, headers=MEMBER_CALLS)
        assert routed.status_code == 403 and route.rule in routed.text
        for _ in range(2):  # rendered, then answered from the cache
            shown = client.get(path, headers=ADMIN_CALLS)
            assert shown.status_code == 200
        for headers in (MEMBER_CALLS, {**MEMBER_CALLS, "If-None-Match": shown.headers["ETag"]}):
            refused = client.get(path, headers=headers)
            assert refused.status_code == 403 and route.rule in refused.text
        assert client.get(path, headers=ADMIN_CALLS).content == shown.content


@pytest.mark.postgres
def test_a_database_away_under_a_cached_read_is_a_503(
    postgres: ThrowawayPostgres, gpu_server: FakeSysfs
) -> None:
    url = postgres.new_database()
    device = str(fill(url, gpu_server).hardware[0].uuid)
    settings = ApiSettings(auth="token", tokens=TOKENS)
    with TestClient(create_app(make_engine(url), settings), headers=ADMIN_CALLS) as client:
        etags = {}
        for route in CACHED:
            for _ in range(2):  # the second answer comes from the cache
                answer = client.get(filled_in(route, device))
                assert answer.status_code == 200
            etags[route.path] = answer.headers["ETag"]
        postgres.stop()
        try:
            for route in CACHED:
                for headers in ({}, {"If-None-Match": etags[route.path]}):
                    answer = client.get(filled_in(route, device), headers=headers)
                    assert answer.status_code == 503, answer.text
                    assert answer.headers["content-type"] == "application/json"
                    fault = json.loads(answer.json()["error_message"])
                    assert fault["faultcode"] == "Server" and "database" in fault["faultstring"]
        finally:
            postgres.start()
        for route in CACHED:
            assert client.get(filled_in(route, device)).status_code == 200
