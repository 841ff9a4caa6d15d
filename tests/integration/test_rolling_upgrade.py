"""Components one internal minor version apart work together (rolling upgrades).

``--internal-version-max 1.0`` makes a component speak only the seed's 1.0, as the
previous release would: no PCI facts in hardware, no generations, no node name.
"""

from __future__ import annotations

from accel.driver.fake_sysfs import FakeSysfs
from tests.integration.fleet import (
    FAST_AGENT,
    FAST_CONDUCTOR,
    FAST_DRIVER,
    agents,
    alarms,
    hardware,
    wait_for_devices,
)
from tests.processes import Cluster

OLD = ("--internal-version-max", "1.0")


def test_an_old_driver_under_a_new_agent(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, *FAST_CONDUCTOR)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", *FAST_AGENT)
    cluster.driver("GPU", agent, gpu_server.root, *FAST_DRIVER, *OLD)
    cluster.driver("QAT", agent, gpu_server.root, *FAST_DRIVER)

    found = wait_for_devices(api, 6, cluster.logs())
    by_type = {d["type"]: d for d in found}
    assert by_type["GPU"]["vendor"] == "unknown"  # 1.0 carries no PCI facts
    assert by_type["QAT"]["vendor"] == "8086"
    assert agents(api)["node1"]["internal_version"] == "1.1"


def test_an_old_agent_under_a_new_conductor(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, *FAST_CONDUCTOR)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", *FAST_AGENT, *OLD)
    cluster.driver("GPU", agent, gpu_server.root, *FAST_DRIVER)

    wait_for_devices(api, 4, cluster.logs())
    # A 1.0 hello names no node: the agent is known by its endpoint.
    [(name, record)] = agents(api).items()
    assert name == agent.endpoint and record["internal_version"] == "1.0"
    assert alarms(api) == []


def test_a_new_agent_under_an_old_conductor(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, *FAST_CONDUCTOR, *OLD)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", *FAST_AGENT)
    cluster.driver("NIC", agent, gpu_server.root, *FAST_DRIVER)

    found = wait_for_devices(api, 2, cluster.logs())
    assert {d["vendor"] for d in found} == {"unknown"}
    assert list(agents(api)) == [agent.endpoint]
    assert {h["acc_status"]["setup_required"] for h in hardware(api)} == {False, True}
