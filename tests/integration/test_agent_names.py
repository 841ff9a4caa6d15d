"""One agent name, one live agent: a second one is refused, a restarted one let in."""

from __future__ import annotations

import functools

import httpx

from accel.cli.argv import Setting, accel_argv
from accel.cli.node_daemons import driver
from accel.driver.fake_sysfs import FakeSysfs
from accel.states import AgentState, AlarmKind
from tests.integration.fleet import FAST_AGENT, FAST_DRIVER, agents, alarms
from tests.processes import Cluster, Service, agent_drivers, internal_client, wait_until


def conductor_settings(down_after: float) -> dict[str, Setting]:
    return {"heartbeat_interval": 0.5, "resync_interval": 1, "agent_down_after": down_after}


def heard_since(api: Service, name: str, since: str) -> bool:
    return bool(agents(api)[name]["last_seen"] > since)


def test_a_second_agent_of_a_live_agents_name_is_refused_and_alarmed(
    cluster: Cluster, sqlite_url: str
) -> None:
    conductor = cluster.conductor(sqlite_url, **conductor_settings(5))
    api = cluster.api(sqlite_url)
    first = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    wait_until(lambda: "node1" in agents(api), "node1 registered")
    second = cluster.agent([conductor.url], "node1", **FAST_AGENT)

    wait_until(
        lambda: (AlarmKind.AGENT_NAME_CLASH, "node1") in alarms(api),
        "a name clash alarm",
        on_timeout=cluster.logs,
    )
    # The impostor's hello, as it sends it: 409 with a JSON body naming the holder.
    with internal_client("1.5") as client:
        refused = client.post(
            conductor.url + "/v1/hello",
            json={"status": "READY", "endpoint": second.endpoint, "name": "node1"},
        )
    assert refused.status_code == 409, refused.text
    assert first.endpoint in refused.json()["error"]
    # Heartbeats go on, and the name stays with the first agent through them.
    for _ in range(3):
        seen = agents(api)["node1"]["last_seen"]
        wait_until(functools.partial(heard_since, api, "node1", seen), "a heartbeat of node1")
        assert agents(api)["node1"]["endpoint"] == first.endpoint
    assert [kind for kind, _ in alarms(api)] == [AlarmKind.AGENT_NAME_CLASH]

    cluster.discard(second)  # the clash ends; its alarm clears once refusals stop
    wait_until(lambda: alarms(api) == [], "the clash alarm to clear", timeout=60)
    assert agents(api)["node1"]["state"] == AgentState.UP


def test_an_agent_restarted_on_a_new_port_keeps_its_name(cluster: Cluster, sqlite_url: str) -> None:
    # A long grace: the new process is let in because the old one is gone, not DOWN.
    conductor = cluster.conductor(sqlite_url, **conductor_settings(600))
    api = cluster.api(sqlite_url)
    first = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    wait_until(lambda: "node1" in agents(api), "node1 registered")
    first.kill()
    assert first.sock is not None
    first.sock.close()
    cluster.services.remove(first)
    again = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    wait_until(
        lambda: agents(api)["node1"]["endpoint"] == again.endpoint,
        "node1 at its new endpoint",
        on_timeout=cluster.logs,
    )
    assert alarms(api) == [] and agents(api)["node1"]["state"] == AgentState.UP
    assert httpx.get(again.url + "/").json()["name"] == "node1"


def test_a_second_live_driver_of_a_kind_is_refused_and_a_restarted_one_let_in(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, **conductor_settings(5))
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    first = cluster.driver("GPU", agent, gpu_server.root, **FAST_DRIVER)
    argv = accel_argv(
        driver, kind="GPU", agent=agent.url, sysfs_root=gpu_server.root, **FAST_DRIVER
    )
    second = cluster.spawn("driver-gpu-2", argv, None, "")

    wait_until(
        lambda: "stop one of them" in second.log(),
        "the second driver's refusal",
        on_timeout=cluster.logs,
    )
    # The kind stays with the first driver through the second's hellos: nothing of
    # the node's hardware vanishes and comes back.
    for _ in range(3):
        seen = agents(api)["node1"]["last_seen"]
        wait_until(functools.partial(heard_since, api, "node1", seen), "a heartbeat of node1")
        assert gpu_endpoint(agent) == first.url.removeprefix("http://")
    assert alarms(api, state="all") == []

    cluster.discard(first)  # gone: the second one is the node's GPU driver now
    wait_until(
        lambda: gpu_endpoint(agent) != first.url.removeprefix("http://"),
        "the second driver to take the kind over",
        on_timeout=cluster.logs,
    )
    assert second.alive()


def gpu_endpoint(agent: Service) -> str | None:
    return next((d["endpoint"] for d in agent_drivers(agent) if d["type"] == "GPU"), None)
