"""accel against a real Keystone 30 (tests/keystone_service.py): ``accel api --auth
keystone`` validating users' and Nova's service tokens, and the conductor's
credentials getting a token and the catalog's endpoints through keystoneauth1.

(tests/api/test_keystone.py runs the same api against a small fake, for the Identity
service's failures.)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from accel.api.app import ApiSettings, create_app
from accel.db.engine import make_engine
from accel.driver.fake_sysfs import FakeSysfs
from accel.openstack.credentials import make_adapter, make_session, read_credentials
from tests.api.test_api import fill
from tests.integration.fleet import FAST_CONDUCTOR, bind_ops
from tests.integration.nova_recorder import nova_recorder
from tests.keystone_service import ThrowawayKeystone, keystone
from tests.processes import Cluster, wait_until

__all__ = ["keystone"]  # the fixture, shared

PATH = "/v2/accelerator_requests"


@pytest.fixture
def api(
    keystone: ThrowawayKeystone, sqlite_url: str, gpu_server: FakeSysfs
) -> Iterator[TestClient]:
    fill(sqlite_url, gpu_server)
    settings = ApiSettings(auth="keystone", keystone_url=keystone.url)
    with TestClient(create_app(make_engine(sqlite_url), settings)) as client:
        yield client


def test_keystone_tokens_and_nova_s_service_token_on_the_api(
    keystone: ThrowawayKeystone, api: TestClient
) -> None:
    alice = {"X-Auth-Token": keystone.token("alice")}
    admin = {"X-Auth-Token": keystone.token("admin")}
    assert api.get("/v2/device_profiles").status_code == 401
    assert api.get("/v2/device_profiles", headers={"X-Auth-Token": "forged"}).status_code == 401
    assert api.get("/v2/device_profiles", headers=alice).status_code == 200
    assert api.get("/v2/devices", headers=alice).status_code == 403
    assert len(api.get("/v2/devices", headers=admin).json()["devices"]) == 10
    made = api.post(
        "/v2/device_profiles",
        headers=admin,
        json=[{"name": "gpu", "groups": [{"resources:PGPU": "1"}]}],
    )
    assert made.status_code == 201, made.text
    [arq] = api.post(PATH, headers=alice, json={"device_profile_name": "gpu"}).json()["arqs"]
    demo = keystone.admin("GET", "/projects?name=demo")["projects"][0]["id"]
    assert arq["project_id"] == demo
    bind = {arq["uuid"]: bind_ops(str(uuid.uuid4()), str(uuid.uuid4()))}
    # Alice alone may not bind, nor the admin; with Nova's service token (a real
    # Keystone token of the service role) the api passes it on (503: no conductor).
    assert api.patch(PATH, headers=alice, json=bind).status_code == 403
    assert api.patch(PATH, headers=admin, json=bind).status_code == 403
    as_nova = {**alice, "X-Service-Token": keystone.token("nova")}
    assert api.patch(PATH, headers=as_nova, json=bind).status_code == 503
    # A token of a user without the service role is no service token.
    not_nova = {**alice, "X-Service-Token": keystone.token("alice")}
    assert api.patch(PATH, headers=not_nova, json=bind).status_code == 403
    forged = {**alice, "X-Service-Token": "forged"}
    assert api.patch(PATH, headers=forged, json=bind).status_code == 401


def credentials_file(keystone: ThrowawayKeystone, folder: Path, user: str) -> Path:
    path = folder / f"{user}.json"
    path.write_text(json.dumps(keystone.credentials(user)))
    return path


def test_the_credentials_module_gets_a_token_and_the_catalog_s_endpoints(
    keystone: ThrowawayKeystone, tmp_path: Path
) -> None:
    credentials = read_credentials(
        None, keystone.auth_url, credentials_file(keystone, tmp_path, "accel")
    )
    assert credentials is not None and credentials.keystone
    # The token brings the catalog as it is when it is issued.
    keystone.set_endpoint("placement", "http://127.0.0.1:9/placement-from-catalog")
    session = make_session(credentials)
    token = session.get_token()
    assert token
    # Keystone itself says whose token it is.
    seen = httpx.get(
        keystone.auth_url + "/auth/tokens",
        headers={"X-Auth-Token": keystone.token("admin"), "X-Subject-Token": token},
        timeout=30,
    ).json()["token"]
    assert seen["user"]["name"] == "accel"
    assert {r["name"] for r in seen["roles"]} >= {"admin", "service"}
    placement = make_adapter(session, credentials, "placement", None)
    assert placement.get_endpoint() == "http://127.0.0.1:9/placement-from-catalog"
    # A URL given wins over the catalog.
    compute = make_adapter(session, credentials, "compute", "http://127.0.0.1:9/given")
    assert compute.get_endpoint() == "http://127.0.0.1:9/given"


def test_a_conductor_with_a_keystone_user_sends_nova_s_events_to_the_catalog_s_compute(
    keystone: ThrowawayKeystone, cluster: Cluster, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'accel.db'}"
    with nova_recorder() as nova:
        keystone.set_endpoint("compute", nova.url)
        conductor = cluster.conductor(
            database,
            **FAST_CONDUCTOR,
            nova_url="catalog",
            openstack_auth_url=keystone.auth_url,
            openstack_credentials_file=credentials_file(keystone, tmp_path, "accel"),
        )
        api = cluster.api(database)
        profile = [{"name": "gpu", "groups": [{"resources:PGPU": "1"}]}]
        assert httpx.post(api.url + "/v2/device_profiles", json=profile, timeout=30).is_success
        created = httpx.post(api.url + PATH, json={"device_profile_name": "gpu"}, timeout=30)
        arq = created.json()["arqs"][0]["uuid"]
        instance = str(uuid.uuid4())
        # No such provider: the bind fails, and Nova hears so.
        patch = {arq: bind_ops(str(uuid.uuid4()), instance)}
        assert httpx.patch(api.url + PATH, json=patch, timeout=30).status_code == 202
        [post] = wait_until(
            lambda: nova.for_instance(instance) or None, "Nova's event", on_timeout=cluster.logs
        )
        assert conductor.alive()
    assert post.body["events"] == [
        {
            "name": "accelerator-request-bound",
            "server_uuid": instance,
            "tag": arq,
            "status": "failed",
        }
    ]
    assert post.headers["OpenStack-API-Version"] == "compute 2.82"
    seen = httpx.get(
        keystone.auth_url + "/auth/tokens",
        headers={
            "X-Auth-Token": keystone.token("admin"),
            "X-Subject-Token": post.headers["X-Auth-Token"],
        },
        timeout=30,
    ).json()["token"]
    assert seen["user"]["name"] == "accel"
