"""The public API answered from a real SQLite database that the conductor's code filled."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from accel.api.app import ApiSettings, create_app
from accel.api.auth import Identity
from accel.conductor.agents import record_hello
from accel.conductor.reconcile import store_inventory
from accel.db.engine import make_engine, migrate, session_factory
from accel.driver.discovery import discover
from accel.driver.fake_sysfs import FakeSysfs
from accel.internal.schemas import DriverOutcome, HardwareList, Kind
from accel.states import AgentState, DeviceStatus

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
ADMIN_TOKEN = "admin-token"


def fill(database: str, tree: FakeSysfs) -> HardwareList:
    engine = make_engine(database)
    migrate(engine)
    sessions = session_factory(engine)
    record_hello(sessions, "node1", "127.0.0.1:6671", "1.1", T0)
    found = HardwareList(
        hardware=[h for kind in Kind for h in discover(kind, tree.root, "node1")],
        drivers=[DriverOutcome(type=kind, endpoint="x:1", state="ok") for kind in Kind],
    )
    store_inventory(sessions, "node1", found, T0, T0, T0)
    engine.dispose()
    return found


@pytest.fixture
def found(database_url: str, gpu_server: FakeSysfs) -> HardwareList:
    return fill(database_url, gpu_server)


@pytest.fixture
def api(database_url: str, found: HardwareList) -> Iterator[TestClient]:
    app = create_app(make_engine(database_url), ApiSettings(auth="noauth"))
    with TestClient(app) as client:
        yield client


def fault(response: object) -> str:
    body = response.json()  # type: ignore[attr-defined]
    return str(json.loads(body["error_message"])["faultstring"])


def test_version_documents_need_no_token(sqlite_url: str) -> None:
    app = create_app(make_engine(sqlite_url), ApiSettings(auth="token", tokens={}))
    with TestClient(app) as client:
        root = client.get("/").json()
        assert root["default_version"]["min_version"] == "2.0"
        assert root["default_version"]["max_version"] == "2.3"
        assert root["versions"][0]["links"][0]["href"] == "http://testserver/accelerator/v2"
        v2 = client.get("/accelerator/v2").json()
        assert v2["id"] == "v2.0"
        assert v2["links"][0]["href"].endswith("/accelerator/v2/")


def test_token_auth_refuses_strangers_and_admits_known_tokens(
    database_url: str, found: HardwareList
) -> None:
    tokens = {ADMIN_TOKEN: Identity(user_id="u", project_id="p", roles=("admin",))}
    app = create_app(make_engine(database_url), ApiSettings(auth="token", tokens=tokens))
    with TestClient(app) as client:
        refused = client.get("/v2/devices")
        assert refused.status_code == 401 and "X-Auth-Token" in fault(refused)
        assert client.get("/v2/devices", headers={"X-Auth-Token": "wrong"}).status_code == 401
        admitted = client.get("/v2/devices", headers={"X-Auth-Token": ADMIN_TOKEN})
        assert admitted.status_code == 200 and len(admitted.json()["devices"]) == 10


def test_devices_look_like_cyborgs(api: TestClient, found: HardwareList) -> None:
    response = api.get("/v2/devices", params={"type": "GPU"})
    assert response.headers["OpenStack-API-Version"] == "accelerator 2.0"
    assert response.headers["Vary"] == "OpenStack-API-Version"
    devices = response.json()["devices"]
    assert len(devices) == 4
    first = devices[0]
    assert set(first) == {
        "uuid",
        "type",
        "vendor",
        "model",
        "std_board_info",
        "vendor_board_info",
        "hostname",
        "created_at",
        "updated_at",
        "links",
        "health",
    }
    assert (first["vendor"], first["model"], first["hostname"]) == ("10de", "2331", "node1")
    assert json.loads(first["std_board_info"]) == {
        "controller": "3D controller",
        "product_id": "2331",
    }
    assert first["created_at"] == "2026-11-27T12:00:00+00:00"
    assert first["links"] == [
        {"rel": "self", "href": f"http://testserver/accelerator/v2/devices/{first['uuid']}"}
    ]


def test_status_appears_from_microversion_2_3(api: TestClient) -> None:
    old = api.get("/v2/devices", headers={"OpenStack-API-Version": "accelerator 2.2"})
    assert "status" not in old.json()["devices"][0]
    new = api.get("/v2/devices", headers={"OpenStack-API-Version": "accelerator 2.3"})
    assert new.json()["devices"][0]["status"] == DeviceStatus.ENABLED
    assert new.headers["OpenStack-API-Version"] == "accelerator 2.3"
    bare = api.get("/v2/devices", headers={"OpenStack-API-Version": "2.3"})
    assert bare.headers["OpenStack-API-Version"] == "accelerator 2.3"


@pytest.mark.parametrize("asked", ["accelerator 2.4", "accelerator 3.0", "accelerator two"])
def test_microversions_out_of_range_are_406(api: TestClient, asked: str) -> None:
    response = api.get("/v2/devices", headers={"OpenStack-API-Version": asked})
    assert response.status_code == 406
    assert response.headers["OpenStack-API-Maximum-Version"] == "2.3"
    assert "microversion" in fault(response)


def test_the_catalog_prefix_serves_the_same_api(api: TestClient) -> None:
    assert api.get("/accelerator/v2/devices").json() == api.get("/v2/devices").json()


def test_filters_are_exact_and_unknown_ones_are_refused(api: TestClient) -> None:
    assert len(api.get("/v2/devices", params={"vendor": "8086"}).json()["devices"]) == 5
    assert api.get("/v2/devices", params={"hostname": "elsewhere"}).json() == {"devices": []}
    refused = api.get("/v2/devices", params={"colour": "red"})
    assert refused.status_code == 400 and "colour" in fault(refused)


def test_one_device_by_uuid(api: TestClient, found: HardwareList) -> None:
    uuid = str(found.hardware[0].uuid)
    assert api.get(f"/v2/devices/{uuid}").json()["uuid"] == uuid
    missing = api.get("/v2/devices/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404 and "not found" in fault(missing)
    malformed = api.get("/v2/devices/not-a-uuid")
    assert malformed.status_code == 400 and "not-a-uuid" in fault(malformed)


def test_hardware_shows_readiness_and_history(api: TestClient) -> None:
    hardware = api.get("/v2/hardware").json()["hardware"]
    assert len(hardware) == 10
    needing_setup = sorted(
        h["pci"]["address"] for h in hardware if h["acc_status"]["setup_required"]
    )
    assert needing_setup == ["0000:70:00.0", "0000:98:00.1"]
    assert all(h["present"] and h["reachable"] and h["node"] == "node1" for h in hardware)
    assert api.get("/v2/hardware", params={"state": "vanished"}).json() == {"hardware": []}
    assert len(api.get("/v2/hardware", params={"type": "qat"}).json()["hardware"]) == 2
    assert api.get("/v2/hardware", params={"state": "gone"}).status_code == 400


def test_agents_and_alarms(api: TestClient) -> None:
    [agent] = api.get("/v2/agents").json()["agents"]
    assert (agent["name"], agent["endpoint"], agent["state"]) == (
        "node1",
        "127.0.0.1:6671",
        AgentState.UP,
    )
    assert api.get("/v2/alarms").json() == {"alarms": []}
    assert api.get("/v2/alarms", params={"state": "all"}).json() == {"alarms": []}
    assert api.get("/v2/alarms", params={"state": "loud"}).status_code == 400
