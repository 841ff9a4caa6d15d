"""Every endpoint x every kind of caller -> the status Cyborg's default policies give.

Callers: nobody (no token), a reader and a member of project A, a member of
project B, and an admin. Endpoints that a conductor carries out (bind, setup, deleting
a bound request) answer 503 here once the caller is let through: no conductor runs
in these tests, which is how a pass through the policy shows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from accel.api.app import ApiSettings, create_app
from accel.api.auth import Identity
from accel.api.policy import load_policy
from accel.db.engine import make_engine, session_factory
from accel.db.models import AcceleratorRequest
from accel.driver.fake_sysfs import FakeSysfs
from accel.states import ArqState
from tests.api.test_api import fill

CALLERS = ("nobody", "reader-a", "member-a", "member-b", "admin")
TOKENS = {
    "reader-a": Identity(user_id="r", project_id="project-a", roles=("reader",)),
    "member-a": Identity(user_id="a", project_id="project-a", roles=("member",)),
    "member-b": Identity(user_id="b", project_id="project-b", roles=("member",)),
    "admin": Identity(user_id="x", project_id="ops", roles=("admin",)),
    # Nova's service user, whose token Nova sends as X-Service-Token.
    "nova": Identity(user_id="n", project_id="service", roles=("service",)),
}
ADMIN_ONLY = (401, 403, 403, 403)


@dataclass
class World:
    client: TestClient
    ids: dict[str, str]

    def call(
        self, caller: str, method: str, path: str, body: Any = None, service: str | None = None
    ) -> int:
        headers = {"OpenStack-API-Version": "accelerator 2.3"}
        if caller != "nobody":
            headers["X-Auth-Token"] = caller
        if service is not None:
            headers["X-Service-Token"] = service
        response = self.client.request(method, path.format(**self.ids), headers=headers, json=body)
        status: int = response.status_code
        return status


def world_for(database_url: str, tree: FakeSysfs, policy: Path | None = None) -> Iterator[World]:
    fill(database_url, tree)
    settings = ApiSettings(auth="token", tokens=TOKENS, policy=load_policy(policy))
    with TestClient(create_app(make_engine(database_url), settings)) as client:
        admin = {"X-Auth-Token": "admin"}
        for name in ("gpu", "spare"):
            client.post(
                "/v2/device_profiles",
                headers=admin,
                json=[{"name": name, "groups": [{"resources:PGPU": "1"}]}],
            )
        profile = client.get(
            "/v2/device_profiles/gpu", headers={**admin, "OpenStack-API-Version": "accelerator 2.2"}
        ).json()["device_profile"]
        [arq] = client.post(
            "/v2/accelerator_requests",
            headers={"X-Auth-Token": "member-a"},
            json={"device_profile_name": "gpu"},
        ).json()["arqs"]
        device = client.get("/v2/devices", headers=admin).json()["devices"][0]
        deployable = client.get("/v2/deployables", headers=admin).json()["deployables"][0]
        attribute = client.get("/v2/attributes", headers=admin).json()["attributes"][0]
        yield World(
            client,
            {
                "profile": profile["uuid"],
                "arq": arq["uuid"],
                "device": device["uuid"],
                "deployable": deployable["uuid"],
                "attribute": attribute["uuid"],
            },
        )


@pytest.fixture
def world(sqlite_url: str, gpu_server: FakeSysfs) -> Iterator[World]:
    yield from world_for(sqlite_url, gpu_server)


BIND = [
    {"op": "add", "path": "/hostname", "value": "node1"},
    {"op": "add", "path": "/device_rp_uuid", "value": "5f0c2b8e-6a3d-4e1f-9b7c-0d2e4f6a8b1c"},
    {"op": "add", "path": "/instance_uuid", "value": "1e3a5c7e-9b0d-4f2a-8c6e-0a2c4e6a8c0e"},
]
PROGRAM = [
    {
        "op": "replace",
        "path": "/program",
        "value": [{"image_uuid": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"}],
    }
]

MATRIX: list[tuple[str, str, Any, tuple[int, ...]]] = [
    ("GET", "/", None, (200, 200, 200, 200, 200)),
    ("GET", "/v2/device_profiles", None, (401, 200, 200, 200, 200)),
    ("GET", "/v2/device_profiles/{profile}", None, (401, 200, 200, 200, 200)),
    (
        "POST",
        "/v2/device_profiles",
        [{"name": "new", "groups": [{"resources:PGPU": "1"}]}],
        (*ADMIN_ONLY, 201),
    ),
    ("DELETE", "/v2/device_profiles/spare", None, (*ADMIN_ONLY, 204)),
    ("GET", "/v2/accelerator_requests", None, (401, 200, 200, 200, 200)),
    ("GET", "/v2/accelerator_requests/{arq}", None, (401, 200, 200, 404, 200)),
    ("POST", "/v2/accelerator_requests", {"device_profile_name": "gpu"}, (401, 403, 201, 201, 201)),
    # Binding is Nova's alone (its service token): no user, not even an admin, binds.
    ("PATCH", "/v2/accelerator_requests", "bind-arq", (401, 403, 403, 403, 403)),
    # An unbound request holds nothing: its owner deletes it without a conductor, and
    # the admin, asking next, finds it gone.
    ("DELETE", "/v2/accelerator_requests?arqs={arq}", None, (401, 403, 204, 404, 404)),
    ("GET", "/v2/devices", None, (*ADMIN_ONLY, 200)),
    ("GET", "/v2/devices/{device}", None, (*ADMIN_ONLY, 200)),
    ("POST", "/v2/devices/{device}/disable", None, (*ADMIN_ONLY, 200)),
    ("POST", "/v2/devices/{device}/enable", None, (*ADMIN_ONLY, 200)),
    ("GET", "/v2/deployables", None, (*ADMIN_ONLY, 200)),
    ("GET", "/v2/deployables/{deployable}", None, (*ADMIN_ONLY, 200)),
    ("PATCH", "/v2/deployables/{deployable}/program", PROGRAM, (*ADMIN_ONLY, 503)),
    (
        "POST",
        "/v2/devices/{device}/setup",
        {"action": "enable_vfs", "num_vfs": 2},
        (*ADMIN_ONLY, 503),
    ),
    ("GET", "/v2/operations", None, (*ADMIN_ONLY, 200)),
    ("GET", "/v2/operations/9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", None, (*ADMIN_ONLY, 404)),
    ("GET", "/v2/attributes", None, (*ADMIN_ONLY, 200)),
    ("GET", "/v2/attributes/{attribute}", None, (*ADMIN_ONLY, 200)),
    (
        "POST",
        "/v2/attributes",
        {"deployable_id": 1, "key": "trait7", "value": "CUSTOM_X"},
        (*ADMIN_ONLY, 201),
    ),
    ("DELETE", "/v2/attributes/{attribute}", None, (*ADMIN_ONLY, 204)),
    ("GET", "/v2/hardware", None, (*ADMIN_ONLY, 200)),
    ("GET", "/v2/agents", None, (*ADMIN_ONLY, 200)),
    ("GET", "/v2/alarms", None, (*ADMIN_ONLY, 200)),
    ("GET", "/v2/placement/status", None, (*ADMIN_ONLY, 200)),
    # The fleet page: without a token, its frame and a token form (401), no data.
    ("GET", "/ui/", None, (*ADMIN_ONLY, 200)),
    ("GET", "/ui/devices", None, (*ADMIN_ONLY, 200)),
    ("GET", "/ui/devices/{device}", None, (*ADMIN_ONLY, 200)),
    ("GET", "/ui/alarms", None, (*ADMIN_ONLY, 200)),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"), MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX]
)
def test_policy(world: World, method: str, path: str, body: Any, expected: tuple[int, ...]) -> None:
    if body == "bind-arq":
        body = {world.ids["arq"]: BIND}
    # The admin goes last: its calls may change what the others would see.
    got = tuple(world.call(caller, method, path, body) for caller in CALLERS)
    assert got == expected


def test_a_policy_file_overrides_the_defaults(
    tmp_path: Path, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {
                "cyborg:device:get_all": "role:admin or role:member",
                "cyborg:device_profile:get_all": "!",
            }
        )
    )
    for world in world_for(sqlite_url, gpu_server, policy):
        assert world.call("member-b", "GET", "/v2/devices") == 200
        assert world.call("reader-a", "GET", "/v2/devices") == 403
        assert world.call("admin", "GET", "/v2/device_profiles") == 403


@pytest.mark.parametrize(
    "content",
    [
        '{"cyborg:device:get_all": "rule:admin_api"}',
        '{"cyborg:arq:bind": "service_roles:"}',
        '{"no:such:rule": "@"}',
        "[]",
        "{",
    ],
)
def test_a_policy_file_accel_cannot_read_is_refused(tmp_path: Path, content: str) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(content)
    with pytest.raises(ValueError):
        load_policy(policy)


UNBIND = [{"op": "remove", "path": "/hostname"}]


def test_binding_unbinding_and_deleting_bound_requests_need_nova_s_service_token(
    world: World, sqlite_url: str
) -> None:
    arq = world.ids["arq"]
    bind, unbind = {arq: BIND}, {arq: UNBIND}
    path = "/v2/accelerator_requests"
    # Let through (503: no conductor runs here) only with a service token of the
    # service role, whoever the user is; refused whatever the user's own role.
    for user in ("member-a", "admin"):
        assert world.call(user, "PATCH", path, bind, service="nova") == 503
        assert world.call(user, "PATCH", path, unbind, service="nova") == 503
        assert world.call(user, "PATCH", path, bind) == 403
        assert world.call(user, "PATCH", path, unbind) == 403
        # A service token whose owner lacks the service role is no service's.
        assert world.call(user, "PATCH", path, bind, service="admin") == 403
    # A service token that is not valid is refused as a bad token is.
    assert world.call("member-a", "PATCH", path, bind, service="forged") == 401
    assert world.call("member-a", "PATCH", path, bind, service="") == 401
    # Deleting a request that holds nothing needs no service; a bound one does, and a
    # refused delete deletes nothing.
    engine = make_engine(sqlite_url)
    with session_factory(engine).begin() as session:
        session.execute(
            update(AcceleratorRequest)
            .where(AcceleratorRequest.uuid == arq)
            .values(state=ArqState.BOUND, instance_uuid=str(uuid.uuid4()), hostname="node1")
        )
    engine.dispose()
    delete = f"{path}?arqs={arq}"
    assert world.call("member-a", "DELETE", delete) == 403
    assert world.call("admin", "DELETE", delete) == 403
    assert world.call("member-a", "GET", f"{path}/{arq}") == 200
    assert world.call("member-a", "DELETE", delete, service="nova") == 503


def test_a_policy_file_may_let_admins_bind_without_a_service_token(
    tmp_path: Path, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"cyborg:arq:bind": "role:admin or service_roles:service"}))
    for world in world_for(sqlite_url, gpu_server, policy):
        bind = {world.ids["arq"]: BIND}
        assert world.call("admin", "PATCH", "/v2/accelerator_requests", bind) == 503
        assert world.call("member-a", "PATCH", "/v2/accelerator_requests", bind) == 403
        assert world.call("member-a", "PATCH", "/v2/accelerator_requests", bind, "nova") == 503
        unbind = {world.ids["arq"]: UNBIND}
        assert world.call("admin", "PATCH", "/v2/accelerator_requests", unbind) == 403
