"""Components one internal minor version apart work together (rolling upgrades).

``--internal-version-max 1.0`` makes a component speak only the seed's 1.0, as the
previous release would: no PCI facts in hardware, no generations, no node name.
"""

from __future__ import annotations

import uuid

import httpx

from accel.cli.argv import Setting
from accel.driver.fake_sysfs import FakeSysfs
from accel.internal.versions import NEWEST, format_version
from tests.integration.fleet import (
    FAST_AGENT,
    FAST_CONDUCTOR,
    FAST_DRIVER,
    agents,
    alarms,
    bind_ops,
    hardware,
    wait_for_devices,
)
from tests.processes import Cluster

OLD: dict[str, Setting] = {"internal_version_max": "1.0"}


def test_an_old_driver_under_a_new_agent(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    cluster.driver("GPU", agent, gpu_server.root, **FAST_DRIVER, **OLD)
    cluster.driver("QAT", agent, gpu_server.root, **FAST_DRIVER)

    found = wait_for_devices(api, 6, cluster.logs())
    by_type = {d["type"]: d for d in found}
    assert by_type["GPU"]["vendor"] == "unknown"  # 1.0 carries no PCI facts
    assert by_type["QAT"]["vendor"] == "8086"
    assert agents(api)["node1"]["internal_version"] == format_version(NEWEST)


def test_peers_before_one_call_discovery_are_started_then_polled(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    # 1.3 knows no POST /v1/discovery?wait: the new conductor and agent fall back to
    # starting a discovery and polling for its generation.
    before: dict[str, Setting] = {"internal_version_max": "1.3"}
    conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT, **before)
    cluster.driver("GPU", agent, gpu_server.root, **FAST_DRIVER, **before)
    new_agent = cluster.agent([conductor.url], "node2", **FAST_AGENT)
    cluster.driver("QAT", new_agent, gpu_server.root, **FAST_DRIVER, **before)

    found = wait_for_devices(api, 6, cluster.logs())
    assert {(d["hostname"], d["type"]) for d in found} == {("node1", "GPU"), ("node2", "QAT")}
    assert all(d["vendor"] != "unknown" for d in found)  # 1.3 carries PCI facts
    known = agents(api)
    assert known["node1"]["internal_version"] == "1.3"
    assert known["node2"]["internal_version"] == format_version(NEWEST)


def test_an_old_agent_under_a_new_conductor(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT, **OLD)
    cluster.driver("GPU", agent, gpu_server.root, **FAST_DRIVER)

    wait_for_devices(api, 4, cluster.logs())
    # A 1.0 hello names no node: the agent is known by its endpoint.
    [(name, record)] = agents(api).items()
    assert name == agent.endpoint and record["internal_version"] == "1.0"
    assert alarms(api) == []


def test_a_new_agent_under_an_old_conductor(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR, **OLD)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    cluster.driver("NIC", agent, gpu_server.root, **FAST_DRIVER)

    found = wait_for_devices(api, 2, cluster.logs())
    assert {d["vendor"] for d in found} == {"unknown"}
    assert list(agents(api)) == [agent.endpoint]
    assert {h["acc_status"]["setup_required"] for h in hardware(api)} == {False, True}


def test_an_api_asking_an_older_conductor_to_bind_says_why_it_cannot(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR, internal_version_max="1.1")
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    cluster.driver("GPU", agent, gpu_server.root, **FAST_DRIVER)
    wait_for_devices(api, 4, cluster.logs())
    created = httpx.post(
        api.url + "/v2/device_profiles",
        timeout=10,
        json=[{"name": "gpu", "groups": [{"resources:PGPU": "1"}]}],
    )
    assert created.status_code == 201
    [arq] = httpx.post(
        api.url + "/v2/accelerator_requests", timeout=10, json={"device_profile_name": "gpu"}
    ).json()["arqs"]
    bind = httpx.patch(
        api.url + "/v2/accelerator_requests",
        timeout=30,
        json={
            arq["uuid"]: bind_ops(str(uuid.uuid4()), str(uuid.uuid4())),
        },
    )
    assert bind.status_code == 503
    assert "internal version" in bind.json()["error_message"]
