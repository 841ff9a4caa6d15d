"""Device health through the real processes: a driver reports it, two conductors on
one PostgreSQL store it, the api shows it and the operator clears it.

The driver is tests/hostile_driver.py answering with a report file this test
rewrites while the stack runs, so the health a driver would read from sysfs is set
here directly (branch health-evidence's drivers read it from fake trees).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from accel.driver.fake_health import healthy, set_aer
from accel.driver.fake_sysfs import FakeSysfs
from accel.internal.health_schemas import (
    MAX_CHECK_NAME_LENGTH,
    MAX_CHECKS_PER_DEVICE,
    MAX_COUNT,
    MAX_VALUE_LENGTH,
    DeviceHealth,
)
from accel.states import AlarmKind, ArqState
from tests.integration.fleet import (
    FAST_AGENT,
    FAST_CONDUCTOR,
    FAST_DRIVER,
    alarms,
    bind_ops,
    get,
    hardware,
    wait_for_devices,
)
from tests.integration.test_allocation import (
    arq,
    call,
    create_arqs,
    create_profile,
    qat_vf_deployables,
)
from tests.integration.test_fleet_faults import FLEET_CONDUCTOR, conductors
from tests.integration.test_hostile_reports import failed_with, hostile_driver
from tests.postgres import ThrowawayPostgres
from tests.processes import Cluster, Service, run_accel, wait_until

T0 = dt.datetime(2026, 12, 6, 10, 0, tzinfo=dt.UTC)
ADDRESSES = ("0000:17:00.0", "0000:31:00.0")


def health(state: str, *checks: tuple[str, str, dt.datetime, bool]) -> dict[str, Any]:
    return {
        "state": state,
        "since": T0.isoformat(),
        "checks": [
            {
                "check": name,
                "severity": severity,
                "value": "1",
                "first_seen": T0.isoformat(),
                "last_seen": seen.isoformat(),
                "count": 1,
                "latch": latch,
            }
            for name, severity, seen, latch in checks
        ],
    }


def write_report(path: Path, first_gpu_health: dict[str, Any]) -> None:
    entries = [
        {
            "uuid": f"00000000-0000-4000-8000-00000000000{index}",
            "acc_specs": {"num": 1, "device_type": "GPU"},
            "acc_status": {"setup_required": False, "reboot_required": False},
            "pci": {
                "address": address,
                "vendor_id": "10de",
                "product_id": "2331",
                "class_code": "030200",
            },
            "health": first_gpu_health if index == 0 else health("ok"),
        }
        for index, address in enumerate(ADDRESSES)
    ]
    path.write_text(json.dumps({"hardware": entries, "generation": 1}))


def first_gpu(api: Service) -> dict[str, Any]:
    return next(e for e in hardware(api) if e["pci"]["address"] == ADDRESSES[0])


@pytest.mark.postgres
def test_a_latched_failure_survives_restarts_alarms_once_and_is_cleared(
    cluster: Cluster, postgres: ThrowawayPostgres, tmp_path: Path
) -> None:
    database = postgres.new_database()
    report = tmp_path / "report.json"
    write_report(report, health("ok"))
    conductors = [cluster.conductor(database, **FAST_CONDUCTOR) for _ in range(2)]
    api = cluster.api(database)
    agent = cluster.agent([c.url for c in conductors], "node1", **FAST_AGENT)
    hostile_driver(cluster, agent, "--report-file", str(report))
    wait_until(lambda: len(hardware(api)) == 2, "both GPUs stored", on_timeout=cluster.logs)

    flapped = dt.datetime.now(dt.UTC)
    write_report(report, health("failed", ("flapping", "failed", flapped, True)))
    gpu = wait_until(
        lambda: (e := first_gpu(api))["health"]["state"] == "failed" and e,
        "the flapping GPU failed",
        on_timeout=cluster.logs,
    )
    assert gpu["health"]["latched_by"] == "flapping"
    # The driver sees it well again, still naming the flap it latched on.
    write_report(report, health("ok", ("flapping", "ok", flapped, True)))
    wait_until(
        lambda: first_gpu(api)["health"]["checks"][0]["severity"] == "ok",
        "the GPU's well reading stored",
    )
    for index, conductor in enumerate(conductors):
        conductor.kill()
        conductors[index] = cluster.restart(conductor)
    synced = get(api, "/v2/agents")["agents"][0]["last_synced_at"]
    wait_until(
        lambda: get(api, "/v2/agents")["agents"][0]["last_synced_at"] != synced,
        "a sync by a restarted conductor",
    )
    assert first_gpu(api)["health"]["state"] == "failed"  # the latch holds
    assert (AlarmKind.HARDWARE_UNHEALTHY, gpu["uuid"]) in alarms(api)

    listed = run_accel("hardware", "list", "--api-url", api.url)
    assert "failed: latched:flapping" in listed.stdout, listed.stderr
    metrics = get_text(api, "/metrics")
    assert f'hardware="{gpu["uuid"]}",kind="GPU",node="node1",reason="latched:flapping"' in metrics

    cleared = run_accel("hardware", "clear-health", gpu["uuid"], "--api-url", api.url)
    assert cleared.returncode == 0 and f"{gpu['uuid']}: ok" in cleared.stdout, cleared.stderr
    assert first_gpu(api)["health"]["state"] == "ok"
    unhealthy = [a for a in alarms(api, "all") if a[0] == AlarmKind.HARDWARE_UNHEALTHY]
    assert unhealthy == [(AlarmKind.HARDWARE_UNHEALTHY, gpu["uuid"])]  # raised once, in all
    assert AlarmKind.HARDWARE_UNHEALTHY not in {kind for kind, _ in alarms(api)}


def get_text(api: Service, path: str) -> str:
    return httpx.get(api.url + path, timeout=10.0).text


QAT = "0000:6b:00.0"


def failed(entry: dict[str, Any]) -> bool:
    return bool(entry["health"]["state"] == "failed")


def test_a_fatal_pcie_error_read_by_the_driver_refuses_binds_and_alarms(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    """The whole chain on a fake tree: the QAT driver polls its AER counters, the
    conductor stores the failure, the api refuses a bind to one of its VFs."""
    for address in (QAT, "0000:70:00.0"):
        healthy(gpu_server, address, 0x8086)
    conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    # The hold keeps the card failed however many clean polls follow the one error,
    # until the bind below is refused: a loaded machine may take long to sync.
    cluster.driver(
        "QAT", agent, gpu_server.root, health_interval=0.1, health_failed_hold=600, **FAST_DRIVER
    )
    wait_for_devices(api, 2, cluster.logs())
    create_profile(api, "qat-one", {"resources:CUSTOM_QAT": "1"})
    [request] = create_arqs(api, "qat-one")
    set_aer(gpu_server, QAT, "fatal", {"Poisoned TLP": 1})  # once, just after the first sync

    def failed_qat() -> dict[str, Any] | None:
        return next((e for e in hardware(api) if e["pci"]["address"] == QAT and failed(e)), None)

    qat = wait_until(failed_qat, "the QAT card failed in the API", on_timeout=cluster.logs)
    assert (AlarmKind.HARDWARE_UNHEALTHY, qat["uuid"]) in alarms(api)
    vf = qat_vf_deployables(api)["node1_0000:6b:00.1"]
    call(
        api,
        "PATCH",
        "/v2/accelerator_requests",
        {request["uuid"]: bind_ops(vf["rp_uuid"], str(uuid.uuid4()))},
    )
    refused = arq(api, request["uuid"])
    assert refused["state"] == ArqState.BIND_FAILED
    assert f"device {qat['uuid']} is failed" in refused["bind_failure_reason"]


def write_atomically(path: Path, first_gpu_health: dict[str, Any]) -> None:
    staging = path.with_name(path.name + ".new")
    write_report(staging, first_gpu_health)
    staging.replace(path)  # the driver never answers with half a report


def at_bounds() -> dict[str, Any]:
    """A device's health with every bound reached: 64 checks, names and values at
    their longest, counts at their largest, times at both ends of UTC, names and
    values accel never made."""
    return {
        "state": "failed",
        "since": "0001-01-01T00:00:00Z",
        "checks": [
            {
                "check": f"vendor_check_{index:02d}".ljust(MAX_CHECK_NAME_LENGTH, "x"),
                "severity": "failed" if index % 2 else "degraded",
                "value": "<b>é</b>" * (MAX_VALUE_LENGTH // 8) + "!" * (MAX_VALUE_LENGTH % 8),
                "first_seen": "0001-01-01T00:00:00Z",
                "last_seen": "9999-12-31T23:59:59Z",
                "count": MAX_COUNT,
                "latch": False,
            }
            for index in range(MAX_CHECKS_PER_DEVICE)
        ],
    }


def over(change: str) -> dict[str, Any]:
    """``at_bounds`` with one thing past its bound."""
    body = at_bounds()
    first = body["checks"][0]
    if change == "checks":
        body["checks"].append(dict(first, check="one_too_many"))
    elif change == "check":
        first["check"] += "x"
    elif change == "value":
        first["value"] += "x"
    elif change == "count":
        first["count"] = MAX_COUNT + 1
    elif change == "severity":
        first["severity"] = "catastrophic"
    else:  # a time that UTC cannot write
        (body if change == "since" else first)[change] = "9999-12-31T23:59:59-01:00"
    return body


def test_health_at_its_bounds_is_stored_intact_and_past_them_refused_naming_it(
    cluster: Cluster, sqlite_url: str, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    write_atomically(report, at_bounds())
    conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    liar = hostile_driver(cluster, agent, "--report-file", str(report))
    stored = wait_until(
        lambda: len(hardware(api)) == 2 and first_gpu(api)["health"],
        "the GPU's health stored",
        on_timeout=cluster.logs,
    )
    sent = DeviceHealth.model_validate(at_bounds()).model_dump(mode="json")
    assert stored["checks"] == sent["checks"]
    assert stored["checks"][0]["count"] == MAX_COUNT
    assert (stored["state"], stored["since"]) == ("failed", "0001-01-01T00:00:00+00:00")
    uuid_of_gpu = first_gpu(api)["uuid"]
    for change, words in [
        ("checks", "health.checks: List should have at most 64 items"),
        ("check", "health.checks[0].check: String should have at most 64 characters"),
        ("value", "health.checks[0].value: String should have at most 255 characters"),
        ("count", "health.checks[0].count: Input should be less than or equal to"),
        ("severity", "health.checks[0].severity: Input should be"),
        ("last_seen", "health.checks[0].last_seen: Value error, the time is outside"),
        ("since", "health.since: Value error, the time is outside"),
    ]:
        write_atomically(report, over(change))
        wait_until(
            functools.partial(failed_with, agent, liar, words),
            f"the agent to refuse the driver's report ({change} past its bound)",
            on_timeout=cluster.logs,
        )
        assert first_gpu(api)["health"] == stored  # nothing of it stored
    unhealthy = [a for a in alarms(api, "all") if a[0] == AlarmKind.HARDWARE_UNHEALTHY]
    assert unhealthy == [(AlarmKind.HARDWARE_UNHEALTHY, uuid_of_gpu)]


@pytest.mark.postgres
def test_a_conductor_killed_during_a_health_sync_loses_nothing_and_alarms_once(
    cluster: Cluster, postgres: ThrowawayPostgres, tmp_path: Path
) -> None:
    database = postgres.new_database()
    report = tmp_path / "report.json"
    write_atomically(report, health("ok"))
    pair = [cluster.conductor(database, **FLEET_CONDUCTOR) for _ in range(2)]
    api = cluster.api(database)
    agent = cluster.agent([c.url for c in pair], "node1", **FAST_AGENT)
    hostile_driver(cluster, agent, "--report-file", str(report))
    wait_until(lambda: len(hardware(api)) == 2, "both GPUs stored", on_timeout=cluster.logs)

    # The chosen moment: the agent stops answering, so the next sync hangs holding
    # its lease; the GPU fails meanwhile, and the conductor running that sync dies.
    agent.pause()

    def holder() -> str | None:
        return next(
            (name for name, c in conductors(api).items() if "node1" in c["sync_leases"]),
            None,
        )

    victim_name = wait_until(holder, "a conductor to hold node1's sync lease")
    victim = next(c for c in pair if c.endpoint == victim_name)
    failed_at = dt.datetime.now(dt.UTC)
    write_atomically(report, health("failed", ("aer_fatal", "failed", failed_at, False)))
    victim.kill()
    agent.resume()

    def failed_gpu() -> dict[str, Any] | None:
        found = first_gpu(api)
        return found if failed(found) else None

    gpu = wait_until(
        failed_gpu,
        "the other conductor to store the failure",
        on_timeout=cluster.logs,
    )
    assert [c["check"] for c in gpu["health"]["checks"]] == ["aer_fatal"]
    cluster.restart(victim)
    synced = get(api, "/v2/agents")["agents"][0]["last_synced_at"]
    wait_until(
        lambda: get(api, "/v2/agents")["agents"][0]["last_synced_at"] != synced,
        "a sync after the restart",
    )
    assert first_gpu(api)["health"] == gpu["health"]  # nothing lost, nothing moved
    unhealthy = [a for a in alarms(api, "all") if a[0] == AlarmKind.HARDWARE_UNHEALTHY]
    assert unhealthy == [(AlarmKind.HARDWARE_UNHEALTHY, gpu["uuid"])]  # raised once
