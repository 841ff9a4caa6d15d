"""Device profiles, deployables, attributes and ARQ validation, answered in-process.

Binding needs a conductor and is tested with real processes in
tests/integration/test_allocation.py; here, everything the api decides alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from accel.api.app import ApiSettings, create_app
from accel.api.auth import Identity
from accel.db.engine import make_engine
from accel.driver.fake_sysfs import FakeSysfs
from tests.api.test_api import fill

TOKENS = {
    "admin": Identity(user_id="a", project_id="ops", roles=("admin",)),
    "alice": Identity(user_id="alice", project_id="project-a", roles=("member",)),
    "bob": Identity(user_id="bob", project_id="project-b", roles=("member",)),
    "rita": Identity(user_id="rita", project_id="project-a", roles=("reader",)),
    # Nova's service user: its token comes as X-Service-Token beside the user's.
    "nova": Identity(user_id="nova", project_id="service", roles=("service",)),
}
GPU_GROUP = {"resources:PGPU": "1", "trait:CUSTOM_GPU_NVIDIA": "required"}


@pytest.fixture
def api(database_url: str, gpu_server: FakeSysfs) -> Iterator[TestClient]:
    fill(database_url, gpu_server)
    app = create_app(make_engine(database_url), ApiSettings(auth="token", tokens=TOKENS))
    with TestClient(app) as client:
        yield client


def as_(who: str, version: str = "2.3") -> dict[str, str]:
    return {"X-Auth-Token": who, "OpenStack-API-Version": f"accelerator {version}"}


def nova_for(who: str, version: str = "2.3") -> dict[str, str]:
    """Nova acting for ``who``: the user's token, and Nova's own as the service token."""
    return {**as_(who, version), "X-Service-Token": "nova"}


def fault(response: Any) -> str:
    return str(json.loads(response.json()["error_message"])["faultstring"])


def make_profile(api: TestClient, name: str = "gpu", groups: Any = None) -> Any:
    return api.post(
        "/v2/device_profiles",
        headers=as_("admin"),
        json=[{"name": name, "groups": groups or [GPU_GROUP], "description": "one H100"}],
    )


def test_a_device_profile_round_trip(api: TestClient) -> None:
    created = make_profile(api)
    assert created.status_code == 201
    profile = created.json()
    assert profile["groups"] == [GPU_GROUP] and profile["description"] == "one H100"
    by_uuid = api.get(f"/v2/device_profiles/{profile['uuid']}", headers=as_("alice"))
    assert by_uuid.json() == {"device_profile": profile}
    assert api.get("/v2/device_profiles/gpu", headers=as_("alice", "2.2")).status_code == 200
    assert api.get("/v2/device_profiles/gpu", headers=as_("alice", "2.1")).status_code == 406
    listed = api.get("/v2/device_profiles", params={"name": "gpu,other"}, headers=as_("rita"))
    assert [p["name"] for p in listed.json()["device_profiles"]] == ["gpu"]
    assert make_profile(api).status_code == 409
    assert (
        api.delete("/v2/device_profiles", params={"value": "gpu"}, headers=as_("admin")).status_code
        == 204
    )
    assert api.get("/v2/device_profiles", headers=as_("admin")).json() == {"device_profiles": []}


@pytest.mark.parametrize(
    ("groups", "complaint"),
    [
        ([], "non-empty list of groups"),
        ([{"resources:PGPU": "one"}], "integer"),
        ([{"resources:PGPU": "0"}], "at least 1"),
        ([{"resources:TPU": "1"}], "TPU"),
        ([{"resources:PGPU": "1", "trait:OWNER_CYBORG": "required"}], "CUSTOM_"),
        ([{"resources:PGPU": "1", "trait:CUSTOM_X": "preferred"}], "required or forbidden"),
        ([{"resources1:PGPU": "1"}], "resources1:PGPU"),
        ([{"accel:bitstream_id": "x"}], "no resources"),
        (["not a dict"], "group 0"),
    ],
)
def test_bad_groups_are_400_and_store_nothing(api: TestClient, groups: Any, complaint: str) -> None:
    response = (
        make_profile(api, groups=groups or None)
        if groups
        else api.post(
            "/v2/device_profiles", headers=as_("admin"), json=[{"name": "x", "groups": []}]
        )
    )
    assert response.status_code == 400
    assert complaint in fault(response)
    assert api.get("/v2/device_profiles", headers=as_("admin")).json() == {"device_profiles": []}


def test_device_profile_bodies_cyborg_answers_500_for_are_400(api: TestClient) -> None:
    no_name = api.post("/v2/device_profiles", headers=as_("admin"), json=[{"groups": []}])
    assert no_name.status_code == 400
    two = api.post(
        "/v2/device_profiles", headers=as_("admin"), json=[{"name": "a", "groups": [GPU_GROUP]}] * 2
    )
    assert two.status_code == 400 and "Only one device profile" in fault(two)


def test_only_an_admin_creates_or_deletes_profiles(api: TestClient) -> None:
    refused = api.post(
        "/v2/device_profiles", headers=as_("alice"), json=[{"name": "gpu", "groups": [GPU_GROUP]}]
    )
    assert refused.status_code == 403
    assert "cyborg:device_profile:create" in fault(refused)
    make_profile(api)
    assert api.delete("/v2/device_profiles/gpu", headers=as_("alice")).status_code == 403


def test_arqs_are_counted_per_group_and_kept_per_project(api: TestClient) -> None:
    make_profile(
        api,
        "two-groups",
        [{"resources:PGPU": "2"}, {"resources:FPGA": "1", "trait:CUSTOM_FPGA_XILINX": "required"}],
    )
    created = api.post(
        "/v2/accelerator_requests", headers=as_("alice"), json={"device_profile_name": "two-groups"}
    )
    assert created.status_code == 201
    arqs = created.json()["arqs"]
    # Two PGPUs, and a Xilinx FPGA counts twice (management and user functions).
    assert [a["device_profile_group_id"] for a in arqs] == [0, 0, 1, 1]
    assert {(a["state"], a["project_id"], a["attach_handle_type"]) for a in arqs} == {
        ("Initial", "project-a", "")
    }
    first = arqs[0]["uuid"]
    assert api.get(f"/v2/accelerator_requests/{first}", headers=as_("rita")).status_code == 200
    # Another project does not even learn that it exists.
    assert api.get(f"/v2/accelerator_requests/{first}", headers=as_("bob")).status_code == 404
    assert api.get("/v2/accelerator_requests", headers=as_("bob")).json() == {"arqs": []}
    assert len(api.get("/v2/accelerator_requests", headers=as_("admin")).json()["arqs"]) == 4
    assert (
        api.post(
            "/v2/accelerator_requests",
            headers=as_("rita"),
            json={"device_profile_name": "two-groups"},
        ).status_code
        == 403
    )


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"device_profile_name": 3}, 400),
        ({"device_profile_name": "nope"}, 404),
    ],
)
def test_bad_arq_creations(api: TestClient, body: Any, status: int) -> None:
    response = api.post("/v2/accelerator_requests", headers=as_("alice"), json=body)
    assert response.status_code == status


def test_bad_patches_are_refused_before_any_conductor_is_asked(api: TestClient) -> None:
    make_profile(api)
    [arq] = api.post(
        "/v2/accelerator_requests", headers=as_("alice"), json={"device_profile_name": "gpu"}
    ).json()["arqs"]
    ops = [
        {"op": "add", "path": "/hostname", "value": "node1"},
        {"op": "add", "path": "/device_rp_uuid", "value": "a5b4c3d2-e1f0-4a1b-8c2d-3e4f5a6b7c8d"},
        {"op": "add", "path": "/instance_uuid", "value": "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"},
    ]
    cases: list[tuple[Any, str, int]] = [
        ({arq["uuid"]: ops[:2]}, "alice", 400),  # no instance_uuid
        ({arq["uuid"]: [*ops[:2], {"op": "remove", "path": "/instance_uuid"}]}, "alice", 400),
        ({arq["uuid"]: [*ops, {"op": "add", "path": "/state", "value": "Bound"}]}, "alice", 400),
        ({"not-a-uuid": ops}, "alice", 400),
        ({arq["uuid"]: ops}, "bob", 404),
        ({arq["uuid"]: [*ops, {"op": "add", "path": "/project_id", "value": "p"}]}, "alice", 403),
    ]
    for body, who, status in cases:
        response = api.patch("/v2/accelerator_requests", headers=nova_for(who), json=body)
        assert response.status_code == status, (body, response.text)
    old = api.patch(
        "/v2/accelerator_requests",
        headers=nova_for("admin", "2.0"),
        json={arq["uuid"]: [*ops, {"op": "add", "path": "/project_id", "value": "p"}]},
    )
    assert old.status_code == 406
    # A valid bind, with no internal token configured, explains why it cannot proceed.
    unavailable = api.patch(
        "/v2/accelerator_requests", headers=nova_for("alice"), json={arq["uuid"]: ops}
    )
    assert unavailable.status_code == 503 and "internal token" in fault(unavailable)
    assert (
        api.get(f"/v2/accelerator_requests/{arq['uuid']}", headers=as_("alice")).json()["state"]
        == "Initial"
    )


def test_deleting_needs_exactly_one_selector(api: TestClient) -> None:
    assert api.delete("/v2/accelerator_requests", headers=as_("alice")).status_code == 400
    both = api.delete(
        "/v2/accelerator_requests", headers=as_("alice"), params={"arqs": "x", "instance": "y"}
    )
    assert both.status_code == 400
    assert (
        api.get(
            "/v2/accelerator_requests", headers=as_("alice"), params={"bind_state": "pending"}
        ).status_code
        == 400
    )


def test_deployables_and_attributes_look_like_cyborgs(api: TestClient) -> None:
    deployables = api.get("/v2/deployables", headers=as_("admin")).json()["deployables"]
    gpu = next(d for d in deployables if d["name"] == "node1_0000:17:00.0")
    assert json.loads(gpu["attributes_list"])[:2] == [
        {"rc": "PGPU"},
        {"trait0": "CUSTOM_GPU_NVIDIA"},
    ]
    assert isinstance(gpu["device_id"], int) and gpu["num_accelerators"] == 1
    assert [link["rel"] for link in gpu["links"]] == ["self", "bookmark"]
    assert api.get(f"/v2/deployables/{gpu['uuid']}", headers=as_("admin")).json() == gpu
    assert api.get("/v2/deployables", headers=as_("alice")).status_code == 403

    created = api.post(
        "/v2/attributes",
        headers=as_("admin"),
        json={"deployable_id": 1, "key": "trait9", "value": "CUSTOM_RACK_7"},
    )
    assert created.status_code == 201
    attribute = created.json()
    listed = api.get(
        "/v2/attributes", headers=as_("admin"), params={"deployable_id": "1", "key": "trait9"}
    ).json()["attributes"]
    assert listed == [attribute]
    # "³" and "²" are digits to str.isdigit, not to int(): a 400, not a 500.
    for odd in ("³", "1²", "-1", "1.0", ""):
        refused = api.get("/v2/attributes", headers=as_("admin"), params={"deployable_id": odd})
        assert refused.status_code == 400 and "deployable_id" in fault(refused), odd
    assert (
        api.delete(f"/v2/attributes/{attribute['uuid']}", headers=as_("admin")).status_code == 204
    )
    assert api.get(f"/v2/attributes/{attribute['uuid']}", headers=as_("admin")).status_code == 404
    assert (
        api.post(
            "/v2/attributes",
            headers=as_("admin"),
            json={"deployable_id": 999999, "key": "k", "value": "v"},
        ).status_code
        == 404
    )


def test_oversized_and_malformed_bodies(api: TestClient) -> None:
    huge = api.post(
        "/v2/device_profiles",
        headers={**as_("admin"), "Content-Type": "application/json"},
        content=b"[" + b" " * (2 << 20) + b"]",
    )
    assert huge.status_code == 413
    garbled = api.post(
        "/v2/device_profiles",
        headers={**as_("admin"), "Content-Type": "application/json"},
        content=b"[{",
    )
    assert garbled.status_code == 400 and "JSON" in fault(garbled)


def test_a_malformed_binding_is_refused_naming_its_field(api: TestClient) -> None:
    make_profile(api)
    [arq] = api.post(
        "/v2/accelerator_requests", headers=as_("alice"), json={"device_profile_name": "gpu"}
    ).json()["arqs"]
    ops = [
        {"op": "add", "path": "/hostname", "value": "node1"},
        {"op": "add", "path": "/device_rp_uuid", "value": "not-a-uuid"},
        {"op": "add", "path": "/instance_uuid", "value": "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"},
    ]
    response = api.patch(
        "/v2/accelerator_requests", headers=nova_for("alice"), json={arq["uuid"]: ops}
    )
    assert response.status_code == 400
    assert f"binding {arq['uuid']}: device_rp_uuid: " in fault(response)


def test_an_unknown_setup_action_is_refused_naming_the_actions(api: TestClient) -> None:
    device = "a5b4c3d2-e1f0-4a1b-8c2d-3e4f5a6b7c8d"
    response = api.post(f"/v2/devices/{device}/setup", headers=as_("admin"), json={"action": "x"})
    assert response.status_code == 400
    assert fault(response).startswith("not a setup action: ")
    assert "(actions: enable_vfs, program" in fault(response)
