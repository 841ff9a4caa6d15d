"""Health in the public API: on /v2/hardware, on /v2/devices (its cache kept true), in
the per-device gauge, and the operator's clear-health and confirm-failures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from accel.api.app import ApiSettings, create_app
from accel.api.auth import Identity
from accel.db.engine import make_engine, session_factory
from accel.driver.fake_sysfs import FakeSysfs
from accel.internal.schemas import HardwareList
from accel.states import CheckSeverity, HealthState
from tests.api.test_api import fill
from tests.conductor.test_health import FATAL, GPU, QAT, Node, check, failed_by, minutes, reading

ADMIN = "admin-token"
READER = "reader-token"
TOKENS = {
    ADMIN: Identity(user_id="u", project_id="p", roles=("admin",)),
    READER: Identity(user_id="r", project_id="p", roles=("manager",)),
}


@pytest.fixture
def node(sqlite_url: str, gpu_server: FakeSysfs) -> Iterator[Node]:
    found: HardwareList = fill(sqlite_url, gpu_server)
    assert found.hardware
    engine = make_engine(sqlite_url)
    sessions: sessionmaker[Session] = session_factory(engine)
    yield Node(sessions, gpu_server)
    engine.dispose()


@pytest.fixture
def client(node: Node, sqlite_url: str) -> Iterator[TestClient]:
    # SQLite only: what differs between the backends is the conductor's, tested there.
    app = create_app(make_engine(sqlite_url), ApiSettings(auth="token", tokens=TOKENS))
    with TestClient(app, headers={"X-Auth-Token": ADMIN}) as client:
        yield client


def by_address(client: TestClient) -> dict[str, dict[str, object]]:
    return {e["pci"]["address"]: e["health"] for e in client.get("/v2/hardware").json()["hardware"]}


def test_health_on_hardware_devices_and_the_gauge(node: Node, client: TestClient) -> None:
    gpu = node.device(GPU).uuid
    # Read once, so the cached answer must go stale when health moves.
    listed = {d["uuid"]: d for d in client.get("/v2/devices").json()["devices"]}
    assert listed[gpu]["health"] == {"state": "unknown", "since": None, "checks": [], "reason": ""}
    node.health[GPU] = FATAL
    node.health[QAT] = reading(
        HealthState.DEGRADED, check("link_width", CheckSeverity.DEGRADED, minutes(1))
    )
    node.sync(minutes(1))
    listed = {d["uuid"]: d for d in client.get("/v2/devices").json()["devices"]}
    shown = listed[gpu]["health"]
    assert (shown["state"], shown["reason"]) == ("failed", "aer_fatal")
    assert shown["checks"][0]["check"] == "aer_fatal" and shown["checks"][0]["count"] == 1
    assert client.get(f"/v2/devices/{gpu}").json()["health"] == shown
    health = by_address(client)
    assert health[GPU] == shown
    assert (health[QAT]["state"], health[QAT]["reason"]) == ("degraded", "link_width")
    metrics = client.get("/metrics").text
    assert (
        f'accel_hardware_health{{hardware="{gpu}",kind="GPU",node="node1",'
        'reason="aer_fatal",state="failed"} 1.0'
    ) in metrics
    assert metrics.count("accel_hardware_health{") == 10


def test_clear_health_lets_a_latch_go_for_admins_only(node: Node, client: TestClient) -> None:
    node.health[GPU] = failed_by("flapping", minutes(1), latch=True)
    node.sync(minutes(1))
    node.health[GPU] = reading(HealthState.OK)
    node.sync(minutes(2))
    gpu = node.device(GPU).uuid
    assert by_address(client)[GPU]["latched_by"] == "flapping"
    refused = client.post(f"/v2/hardware/{gpu}/clear-health", headers={"X-Auth-Token": READER})
    assert refused.status_code == 403
    assert client.post(f"/v2/hardware/{uuid.uuid4()}/clear-health").status_code == 404
    assert client.post("/v2/hardware/nope/clear-health").status_code == 400
    assert client.get(f"/v2/devices/{gpu}").json()["health"]["state"] == "failed"  # cached
    cleared = client.post(f"/v2/hardware/{gpu}/clear-health")
    assert cleared.status_code == 200
    body = cleared.json()
    assert body["uuid"] == gpu and body["health"]["state"] == "ok"
    assert "latched_by" not in body["health"] and body["health"]["cleared_at"]
    assert by_address(client)[GPU]["state"] == "ok"
    assert client.get(f"/v2/devices/{gpu}").json()["health"]["state"] == "ok"
    alarms = client.get("/v2/alarms", params={"state": "all"}).json()["alarms"]
    assert [(a["kind"], a["state"]) for a in alarms] == [("hardware_unhealthy", "cleared")]


def test_confirm_failures_releases_the_brake(node: Node, client: TestClient) -> None:
    addresses = [e.pci.address for e in node.entries if e.pci is not None][:6]
    for address in addresses:
        node.health[address] = FATAL
    node.sync(minutes(1))
    held = [a for a, h in by_address(client).items() if h.get("held_by_brake")]
    assert held  # all six turned failed in one sync: the brake held them all
    kinds = [a["kind"] for a in client.get("/v2/alarms").json()["alarms"]]
    assert "health_brake" in kinds
    assert (
        client.post("/v2/hardware/confirm-failures", headers={"X-Auth-Token": READER}).status_code
        == 403
    )
    confirmed = client.post("/v2/hardware/confirm-failures")
    assert confirmed.json() == {"taken_out_of_service": len(held)}
    assert not any(h.get("held_by_brake") for h in by_address(client).values())
    kinds = [a["kind"] for a in client.get("/v2/alarms").json()["alarms"]]
    assert "health_brake" not in kinds
