"""Heartbeats that carry the node's hardware ETag (internal version 1.5): a node whose
hardware stands still is confirmed without a discovery call, and a change reaches the
API with the next heartbeat, not at the next periodic resync."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from accel.cli.argv import Setting
from accel.driver.fake_sysfs import FakeFunction, FakeSysfs
from tests.integration.fleet import (
    AUTH,
    FAST_AGENT,
    FAST_CONDUCTOR,
    FAST_DRIVER,
    agents,
    hardware,
    samples,
    wait_for_devices,
)
from tests.processes import Cluster, Service, wait_until

# The periodic resync is an hour away: whatever happens below, hellos did it.
NO_PERIODIC_RESYNC: dict[str, Setting] = {"resync_interval": 3600}
CONDUCTOR_DISCOVERIES = (
    "accel_discoveries_total",
    (("component", "conductor"), ("outcome", "ok")),
)
# A driver's answer to a discovery asked with the ETag of its last report.
DRIVER_UNCHANGED = (
    "accel_http_request_duration_seconds_count",
    (("component", "driver"), ("method", "POST"), ("status", "304")),
)


def last_synced(api: Service) -> dt.datetime | None:
    stamp = agents(api)["node1"]["last_synced_at"]
    return None if stamp is None else dt.datetime.fromisoformat(stamp)


def confirmed_without_discovery(cluster: Cluster, api: Service, conductor: Service) -> float:
    """Waits until heartbeats confirmed the synced inventory twice, and checks that the
    conductor asked for no discovery meanwhile: the heartbeats' ETag matched the
    stored one. The conductor's count of discoveries."""
    first = wait_until(lambda: last_synced(api), "the first sync")
    discoveries = samples(conductor, AUTH)[CONDUCTOR_DISCOVERIES]

    # Timestamps are shown to the second: two moves mean two later confirmations.
    def confirmed_twice() -> bool:
        at = last_synced(api)
        return at is not None and at >= first + dt.timedelta(seconds=2)

    wait_until(confirmed_twice, "heartbeats to confirm the inventory", on_timeout=cluster.logs)
    assert samples(conductor, AUTH)[CONDUCTOR_DISCOVERIES] == discoveries
    return discoveries


def test_a_still_node_is_confirmed_by_heartbeats_and_a_change_comes_with_the_next(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, **{**FAST_CONDUCTOR, **NO_PERIODIC_RESYNC})
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    driver = cluster.driver("GPU", agent, gpu_server.root, **FAST_DRIVER)
    wait_for_devices(api, 4, cluster.logs())
    discoveries = confirmed_without_discovery(cluster, api, conductor)
    # Nor did the heartbeats' discoveries move the driver's report: asked with its
    # ETag, the driver answered 304 and the agent kept what it said before.
    assert samples(driver, AUTH).get(DRIVER_UNCHANGED, 0) >= 1

    gpu_server.add(FakeFunction("0000:d0:00.0", 0x10DE, 0x2331, 0x030200, driver="nvidia"))
    wait_until(
        lambda: "0000:d0:00.0" in {h["pci"]["address"] for h in hardware(api)},
        "the new GPU to reach the API",
        on_timeout=cluster.logs,
    )
    assert samples(conductor, AUTH)[CONDUCTOR_DISCOVERIES] == discoveries + 1


@pytest.mark.parametrize(
    ("version", "etag"),
    [("1.4", '"e"'), ("1.5", '"' + "e" * 100 + '"'), ("1.5", "")],
    ids=["a field of 1.5 at 1.4", "longer than any ETag of ours", "empty"],
)
def test_a_hello_with_an_etag_it_may_not_carry_is_refused_and_nothing_recorded(
    cluster: Cluster, sqlite_url: str, version: str, etag: str
) -> None:
    conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR)
    hello = {"status": "READY", "endpoint": "127.0.0.1:7001", "inventory_etag": etag}
    refused = httpx.post(
        conductor.url + "/v1/hello",
        json=hello,
        headers={**AUTH, "Accel-Internal-Version": version},
        timeout=10,
    )
    assert refused.status_code == 400
    assert "inventory_etag" in refused.json()["error"]
    new_agents = ("accel_hellos_total", (("component", "conductor"), ("outcome", "new")))
    assert samples(conductor, AUTH).get(new_agents, 0.0) == 0.0
