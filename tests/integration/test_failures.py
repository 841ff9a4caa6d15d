"""A dead or slow peer costs a timeout, never the inventory."""

from __future__ import annotations

from typing import Any

from accel.cli.argv import Setting
from accel.driver.fake_sysfs import FakeFunction, FakeSysfs
from accel.states import AlarmKind
from tests.integration.fleet import (
    FAST_DRIVER,
    agents,
    alarms,
    devices,
    wait_for_devices,
)
from tests.processes import Cluster, internal_client, wait_until

# Slow heartbeats' patience: a paused agent must stay UP while its syncs fail.
PATIENT_CONDUCTOR: dict[str, Setting] = {
    "heartbeat_interval": 0.5,
    "agent_down_after": 120,
    "resync_interval": 0.5,
    "discovery_timeout": 1,
}
IMPATIENT_AGENT: dict[str, Setting] = {"heartbeat_interval": 0.5, "driver_timeout": 0.5}


def agent_report(url: str) -> dict[str, Any]:
    with internal_client() as client:
        report: dict[str, Any] = client.get(url + "/v1/hardware").json()
    return report


def test_a_hung_driver_is_skipped_and_its_hardware_kept(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, **PATIENT_CONDUCTOR)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **IMPATIENT_AGENT)
    gpu = cluster.driver("GPU", agent, gpu_server.root, **FAST_DRIVER)
    cluster.driver("QAT", agent, gpu_server.root, **FAST_DRIVER)
    wait_for_devices(api, 6, cluster.logs())

    gpu.pause()  # answers nothing from now on
    gpu_server.remove("0000:70:00.0")  # meanwhile a QAT card really goes away

    def gpu_failed() -> bool:
        outcomes = {d["type"]: d["state"] for d in agent_report(agent.url)["drivers"]}
        return outcomes == {"GPU": "failed", "QAT": "ok"}

    wait_until(gpu_failed, "the agent to report the GPU driver failed", on_timeout=cluster.logs)
    wait_for_devices(api, 5, cluster.logs())  # the QAT card vanished; no GPU did
    assert len(devices(api, type="GPU")) == 4
    assert [kind for kind, _ in alarms(api)] == [AlarmKind.HARDWARE_VANISHED]


def test_a_hung_agent_fails_the_sync_and_keeps_the_inventory(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, **PATIENT_CONDUCTOR)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **IMPATIENT_AGENT)
    cluster.driver("GPU", agent, gpu_server.root, **FAST_DRIVER)
    before = wait_for_devices(api, 4, cluster.logs())

    agent.pause()
    error = wait_until(
        lambda: agents(api)["node1"]["last_sync_error"], "a sync to fail", on_timeout=cluster.logs
    )
    assert "timed out" in error or "Timeout" in error
    assert devices(api) == before
    assert alarms(api) == []

    agent.resume()
    wait_until(lambda: agents(api)["node1"]["last_sync_error"] is None, "a good sync again")
    assert devices(api) == before


def test_a_sync_with_a_failed_driver_is_retried_soon_not_at_the_next_resync(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    # Without the short retry, the GPU added below would wait an hour to be seen.
    conductor = cluster.conductor(
        sqlite_url,
        heartbeat_interval=0.5,
        agent_down_after=120,
        resync_interval=3600,
        sync_retry_after=0.5,
    )
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **IMPATIENT_AGENT)
    gpu = cluster.driver("GPU", agent, gpu_server.root, **FAST_DRIVER)
    wait_for_devices(api, 4, cluster.logs)

    gpu.pause()
    # A new driver registering makes the agent ask for a sync, which the GPU fails.
    cluster.driver("QAT", agent, gpu_server.root, **FAST_DRIVER)

    def gpu_failed() -> bool:
        outcomes = {d["type"]: d["state"] for d in agent_report(agent.url)["drivers"]}
        return outcomes == {"GPU": "failed", "QAT": "ok"}

    wait_until(gpu_failed, "a sync in which the GPU driver failed", on_timeout=cluster.logs)
    gpu_server.add(FakeFunction("0000:e1:00.0", 0x10DE, 0x2331, 0x030200, driver="nvidia"))
    gpu.resume()
    wait_for_devices(api, 7, cluster.logs)  # 5 GPUs and 2 QAT cards
    assert len(devices(api, type="GPU")) == 5
