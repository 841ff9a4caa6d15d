"""The seed's flow with every component its own process: hello, discovery, the diff."""

from __future__ import annotations

from pathlib import Path

import httpx

from accel.driver.discovery import discover
from accel.driver.fake_sysfs import FakeFunction, FakeSysfs
from accel.internal.schemas import Kind
from accel.states import AgentState, AlarmKind
from tests.integration.fleet import (
    FAST_AGENT,
    FAST_CONDUCTOR,
    FAST_DRIVER,
    agents,
    alarms,
    devices,
    hardware,
    wait_for_devices,
)
from tests.processes import Cluster, Service, agent_drivers, bound_socket, url_of, wait_until


def node(
    cluster: Cluster, sqlite_url: str, tree: Path, kinds: tuple[str, ...] = ("GPU", "QAT", "NIC")
) -> tuple[Service, Service, Service]:
    conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    for kind in kinds:
        cluster.driver(kind, agent, tree, **FAST_DRIVER)
    return conductor, api, agent


def test_a_nodes_hardware_reaches_the_api(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    _, api, agent = node(cluster, sqlite_url, gpu_server.root)

    found = wait_for_devices(api, 8, cluster.logs())
    expected = {
        str(entry.uuid)
        for kind in (Kind.GPU, Kind.QAT, Kind.NIC)
        for entry in discover(kind, gpu_server.root, "node1")
    }
    # The drivers took the node's name from the agent, so uuids match a local discovery.
    assert {device["uuid"] for device in found} == expected
    assert {d["hostname"] for d in found} == {"node1"}
    assert agents(api)["node1"]["state"] == AgentState.UP
    assert agents(api)["node1"]["endpoint"] == agent.endpoint
    assert len(devices(api, type="QAT")) == 2


def test_drivers_on_port_zero_announce_their_real_port(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    node(cluster, sqlite_url, gpu_server.root, ("GPU", "FPGA"))
    drivers = [service for service in cluster.services if service.name.startswith("driver")]
    for driver in drivers:
        port = int(driver.url.rsplit(":", 1)[1])
        assert port != 0
        answer = httpx.get(driver.url + "/", timeout=5.0).json()
        assert answer["component"] == "driver"
        assert answer["kind"] == driver.name.removeprefix("driver-").upper()


def test_resync_applies_what_changed_on_the_node(
    cluster: Cluster, database_url: str, gpu_server: FakeSysfs
) -> None:
    _, api, _ = node(cluster, database_url, gpu_server.root, ("GPU", "QAT"))
    wait_for_devices(api, 6, cluster.logs())
    before = {h["pci"]["address"]: h for h in hardware(api)}

    gpu_server.remove("0000:b1:00.0")  # a GPU falls off the bus
    gpu_server.add(FakeFunction("0000:d0:00.0", 0x10DE, 0x2331, 0x030200, driver="nvidia"))
    gpu_server.add_virtual_functions(  # the idle QAT card gets VFs
        FakeFunction("0000:70:00.0", 0x8086, 0x4940, 0x0B4000), 0x4941, ["0000:70:00.1"]
    )

    def converged() -> bool:
        now = {h["pci"]["address"]: h for h in hardware(api)}
        return (
            "0000:d0:00.0" in now
            and "0000:b1:00.0" not in now
            and not now["0000:70:00.0"]["acc_status"]["setup_required"]
        )

    wait_until(converged, "the changes to reach the API", on_timeout=cluster.logs)
    gone = before["0000:b1:00.0"]["uuid"]
    assert alarms(api) == [(AlarmKind.HARDWARE_VANISHED, gone)]
    [vanished] = hardware(api, state="vanished")
    assert vanished["uuid"] == gone and vanished["present"] is False
    assert vanished["vanished_at"] is not None
    assert len(devices(api)) == 6
    qat = next(h for h in hardware(api) if h["pci"]["address"] == "0000:70:00.0")
    assert qat["uuid"] == before["0000:70:00.0"]["uuid"]  # changed, not replaced
    assert qat["acc_specs"]["num"] == 1


def test_a_silent_agent_goes_down_and_comes_back(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    _, api, agent = node(cluster, sqlite_url, gpu_server.root, ("GPU",))
    wait_for_devices(api, 4, cluster.logs())

    agent.pause()  # no more heartbeats
    wait_until(lambda: agents(api)["node1"]["state"] == AgentState.DOWN, "the agent to go DOWN")
    assert alarms(api) == [(AlarmKind.AGENT_DOWN, "node1")]
    # Its hardware is unreachable, not gone.
    assert len(devices(api)) == 4
    assert {h["reachable"] for h in hardware(api)} == {False}

    agent.resume()
    wait_until(lambda: agents(api)["node1"]["state"] == AgentState.UP, "the agent to come back")
    assert alarms(api) == []
    [cleared] = [a for a in httpx.get(api.url + "/v2/alarms?state=cleared").json()["alarms"]]
    assert cleared["kind"] == AlarmKind.AGENT_DOWN and cleared["cleared_at"] is not None


def test_the_agent_fails_over_to_a_conductor_that_answers(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR)
    api = cluster.api(sqlite_url)
    dead = bound_socket()  # bound and listening, but nobody ever answers
    dead_url = url_of(dead)
    refused = _refusing_url()
    cluster.agent([refused, dead_url, conductor.url], "node1", **FAST_AGENT)
    wait_until(
        lambda: "node1" in agents(api),
        "the agent to reach the third conductor",
        on_timeout=cluster.logs,
    )
    dead.close()


def _refusing_url() -> str:
    """A loopback port that nothing listens on: connections are refused."""
    sock = bound_socket()
    url = url_of(sock)
    sock.close()
    return url


def test_uuids_survive_restarts_of_every_part(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    _, api, _ = node(cluster, sqlite_url, gpu_server.root, ("GPU", "NIC"))
    first = wait_for_devices(api, 6, cluster.logs())
    for service in list(cluster.services):
        if service is not api:
            cluster.discard(service)

    node(cluster, sqlite_url, gpu_server.root, ("GPU", "NIC"))
    wait_until(
        lambda: agents(api)["node1"]["last_sync_error"] is None and len(hardware(api)) == 6,
        "the restarted node to sync",
    )
    again = devices(api)
    assert sorted((d["uuid"], d["created_at"]) for d in again) == sorted(
        (d["uuid"], d["created_at"]) for d in first
    )
    # The agent was away long enough to be DOWN for a moment; no hardware vanished.
    assert alarms(api) == []
    assert [kind for kind, _ in alarms(api, state="all")] in ([], [AlarmKind.AGENT_DOWN])


def test_a_restarted_agent_relearns_its_drivers_and_loses_nothing(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    _, api, agent = node(cluster, sqlite_url, gpu_server.root, ("GPU", "QAT"))
    before = wait_for_devices(api, 6, cluster.logs())

    agent = cluster.restart(agent)  # same address, empty memory

    def relearned() -> bool:
        return {d["type"] for d in agent_drivers(agent)} == {"GPU", "QAT"}

    wait_until(relearned, "the drivers to say hello again", on_timeout=cluster.logs)
    wait_until(lambda: agents(api)["node1"]["last_sync_error"] is None, "a sync")
    assert devices(api) == before
    assert alarms(api) == []
