"""The api's /metrics serves the fleet as the database holds it (accel_fleet_*), on
both backends, and its own metrics alone while the database is away."""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update
from starlette.testclient import TestClient

from accel.api.app import ApiSettings, create_app
from accel.api.auth import Identity
from accel.conductor.presence import record_conductor
from accel.conductor.reconcile import store_inventory
from accel.db.columns import utcnow
from accel.db.engine import make_engine, session_factory
from accel.db.models import Agent, AttachHandle, Deployable, Device
from accel.driver.fake_sysfs import FakeSysfs
from accel.internal.schemas import HardwareList
from accel.states import AlarmKind
from tests.api.test_api import T0, fill

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def fleet_devices(found: Samples) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["kind"], dict(labels)["use"]): value
        for (name, labels), value in found.items()
        if name == "accel_fleet_devices"
    }


def test_the_fleet_gauges_count_what_the_database_holds(
    database_url: str, gpu_server: FakeSysfs
) -> None:
    report = fill(database_url, gpu_server)
    engine = make_engine(database_url)
    sessions = session_factory(engine)
    app = create_app(make_engine(database_url), ApiSettings(auth="noauth"))
    with TestClient(app) as client:
        first = scrape(client)
        assert first[("accel_fleet_read_ok", ())] == 1
        # Every device of the report is counted once, by its kind; those with setup or
        # a reboot pending apart.
        by_kind = Counter(entry.acc_specs.device_type for entry in report.hardware)
        pending = Counter(
            entry.acc_specs.device_type
            for entry in report.hardware
            if entry.acc_status.setup_required or entry.acc_status.reboot_required
        )
        devices = fleet_devices(first)
        for kind, count in by_kind.items():
            assert sum(v for (k, _), v in devices.items() if k == kind) == count, kind
            assert devices.get((kind, "setup_required"), 0) == pending[kind], kind
        assert all(use in ("ready", "setup_required") for _, use in devices)
        assert first[("accel_fleet_agent_up", (("node", "node1"),))] == 1
        assert first[("accel_fleet_conductors_alive", ())] == 0
        # fill() scheduled node1's next sync at T0, long past: it waits since then.
        assert first[("accel_fleet_syncs_due", ())] == 1
        assert first[("accel_fleet_sync_lag_seconds", ())] >= (utcnow() - T0).total_seconds() - 60
        for alarm in AlarmKind:
            assert first[("accel_fleet_alarms_active", (("kind", alarm),))] == 0

        # One ready GPU bound, another put in maintenance, a third vanished; a
        # conductor alive; a lease left behind by a dead conductor; a failed sync.
        gpus = [e for e in report.hardware if e.acc_specs.device_type == "GPU"]
        ready = [e for e in gpus if not e.acc_status.setup_required]
        assert len(ready) >= 2, "the example server has two ready GPUs"
        bound, kept_out = ready[0], ready[1]
        with sessions.begin() as session:
            device_id = session.scalar(select(Device.id).where(Device.uuid == str(bound.uuid)))
            deployable_ids = select(Deployable.id).where(Deployable.device_id == device_id)
            session.execute(
                update(AttachHandle)
                .where(AttachHandle.deployable_id.in_(deployable_ids))
                .values(in_use=True)
            )
        assert client.post(f"/v2/devices/{kept_out.uuid}/disable").status_code < 300
        gone = next(e for e in report.hardware if e.uuid not in (bound.uuid, kept_out.uuid))
        later = T0 + dt.timedelta(minutes=1)
        store_inventory(
            sessions,
            "node1",
            HardwareList(
                hardware=[e for e in report.hardware if e.uuid != gone.uuid],
                drivers=report.drivers,
            ),
            later,
            later,
            utcnow() + dt.timedelta(hours=1),
        )
        now = utcnow()
        record_conductor(sessions, "c1", "127.0.0.1:1", now, now + dt.timedelta(seconds=30))
        with sessions.begin() as session:
            session.execute(
                update(Agent).values(
                    sync_owner="dead",
                    sync_lease_until=now - dt.timedelta(seconds=5),
                    last_sync_error="agent did not answer",
                )
            )

        second = scrape(client)
        devices = fleet_devices(second)
        assert devices[("GPU", "in_use")] == 1
        assert devices[("GPU", "maintaining")] == 1
        assert devices[(gone.acc_specs.device_type, "vanished")] == 1
        assert sum(devices.values()) == len(report.hardware)
        assert second[("accel_fleet_alarms_active", (("kind", "hardware_vanished"),))] == 1
        assert second[("accel_fleet_conductors_alive", ())] == 1
        assert second[("accel_fleet_syncs_due", ())] == 0
        assert second[("accel_fleet_sync_lag_seconds", ())] == 0
        assert second[("accel_fleet_syncs_failing", ())] == 1
        assert second[("accel_fleet_sync_leases_orphaned", ())] == 1
    engine.dispose()


def test_without_its_database_the_api_serves_its_own_metrics(
    tmp_path: Path, gpu_server: FakeSysfs
) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    url = f"sqlite:///{folder / 'accel.db'}"
    fill(url, gpu_server)
    engine = make_engine(url)
    with TestClient(create_app(engine, ApiSettings(auth="noauth"))) as client:
        assert scrape(client)[("accel_fleet_read_ok", ())] == 1
        engine.dispose()  # no pooled connection keeps the moved file open
        shutil.move(folder, tmp_path / "elsewhere")
        found = scrape(client)
        assert found[("accel_fleet_read_ok", ())] == 0
        assert not [name for name, _ in found if name.startswith("accel_fleet_devices")]
        assert any(name == "accel_http_request_duration_seconds_count" for name, _ in found)


def test_metrics_take_the_token_as_a_bearer_credential_under_the_same_policy(
    sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    """What a Prometheus scrape can send (authorization: credentials_file); only on
    /metrics, and the token and the policy are the API's."""
    fill(sqlite_url, gpu_server)
    tokens = {
        "watcher": Identity(user_id="p", project_id="monitoring", roles=("manager",)),
        "reader": Identity(user_id="r", project_id="monitoring", roles=("reader",)),
    }
    app = create_app(make_engine(sqlite_url), ApiSettings(auth="token", tokens=tokens))
    with TestClient(app) as client:
        for scheme in ("Bearer", "bearer"):
            answer = client.get("/metrics", headers={"Authorization": f"{scheme} watcher"})
            assert answer.status_code == 200, answer.text
            assert "accel_fleet_devices" in answer.text
        assert client.get("/metrics").status_code == 401
        for refused in ("Bearer nope", "Basic watcher", "Bearer ", "watcher"):
            assert client.get("/metrics", headers={"Authorization": refused}).status_code == 401
        # The policy: a reader may not read the fleet, by either header.
        assert client.get("/metrics", headers={"Authorization": "Bearer reader"}).status_code == 403
        assert client.get("/metrics", headers={"X-Auth-Token": "reader"}).status_code == 403
        # X-Auth-Token, when sent, is the token.
        both = {"X-Auth-Token": "reader", "Authorization": "Bearer watcher"}
        assert client.get("/metrics", headers=both).status_code == 403
        # The API itself takes X-Auth-Token alone.
        bearer = {"Authorization": "Bearer watcher"}
        assert client.get("/v2/devices", headers=bearer).status_code == 401
        assert client.get("/v2/devices", headers={"X-Auth-Token": "watcher"}).status_code == 200
