"""Every component serves Prometheus metrics of what it did, behind its usual auth."""

from __future__ import annotations

import httpx

from accel.driver.fake_sysfs import FakeSysfs
from accel.states import AgentState
from tests.integration.fleet import (
    AUTH,
    FAST_AGENT,
    FAST_CONDUCTOR,
    FAST_DRIVER,
    Samples,
    samples,
    wait_for_devices,
)
from tests.processes import Cluster, wait_until


def test_metrics_count_hellos_discoveries_changes_agents_and_requests(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR)
    api = cluster.api(sqlite_url)
    # An agent of 1.4: its heartbeats carry no hardware ETag, so the conductor's
    # periodic resyncs ask it, and get 304s.
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT, internal_version_max="1.4")
    driver = cluster.driver("GPU", agent, gpu_server.root, **FAST_DRIVER)
    wait_for_devices(api, 4, cluster.logs())

    assert httpx.get(conductor.url + "/metrics", timeout=10).status_code == 401

    def agents_counted() -> Samples | None:
        now = samples(conductor, AUTH)
        return now if now.get(("accel_agents", (("state", AgentState.UP),))) == 1 else None

    found = wait_until(agents_counted, "the agents gauge")
    assert found[("accel_hellos_total", (("component", "conductor"), ("outcome", "new")))] == 1
    assert found[("accel_inventory_changes_total", (("change", "added"),))] == 4
    assert found[("accel_discoveries_total", (("component", "conductor"), ("outcome", "ok")))] >= 1

    # Resyncs of a node whose hardware did not change are answered 304 for the
    # stored report's ETag (internal 1.4): counted apart, nothing written again.
    unchanged = ("accel_discoveries_total", (("component", "conductor"), ("outcome", "unchanged")))

    def resynced_unchanged() -> Samples | None:
        now = samples(conductor, AUTH)
        return now if now.get(unchanged, 0) >= 2 else None

    resynced = wait_until(resynced_unchanged, "resyncs answered 304", on_timeout=cluster.logs)
    assert resynced[("accel_inventory_changes_total", (("change", "added"),))] == 4

    at_agent = samples(agent, AUTH)
    assert at_agent[("accel_hellos_total", (("component", "agent"), ("outcome", "new")))] == 1
    at_driver = samples(driver, AUTH)
    assert (
        at_driver[("accel_discoveries_total", (("component", "driver"), ("outcome", "ok")))] >= 2
    )  # once at start, once for the conductor's first sync

    at_api = samples(api, {})
    served = [
        value
        for (name, labels), value in at_api.items()
        if name == "accel_http_request_duration_seconds_count"
        and ("component", "api") in labels
        and ("status", "200") in labels
    ]
    assert sum(served) >= 1
