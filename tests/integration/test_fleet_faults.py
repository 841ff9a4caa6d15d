"""kill -9 during convergence and resync, with two conductors on PostgreSQL.

Each test runs a small fleet of real processes (two conductors, an api, agents with
fake trees, a GPU driver each), kills parts with SIGKILL at chosen moments (and one
at a moment drawn from a seeded random, printed so that a failure can be replayed
with ACCEL_FAULT_SEED), brings them back, and then asks that the database equal the
truth: the union of the nodes' trees, no duplicate, nothing lost, no stale alarm.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from accel.cli.argv import Setting
from accel.driver.discovery import discover
from accel.driver.fake_sysfs import FakeFunction
from accel.internal.schemas import Kind
from accel.states import AgentState, AlarmKind
from tests.integration.fleet import FAST_AGENT, FAST_DRIVER, get, hardware
from tests.integration.fleet import agents as get_agents
from tests.integration.truth import Node, make_nodes, start_node, wait_for_truth
from tests.postgres import ThrowawayPostgres
from tests.processes import Cluster, Service, internal_client, wait_until

# A dead conductor's socket stays open in the test (to restart it on the same address),
# so an agent's hello to it times out (--driver-timeout) before the agent fails over:
# agents are declared DOWN only well after that.
FLEET_CONDUCTOR: dict[str, Setting] = {
    "heartbeat_interval": 0.5,
    "resync_interval": 1,
    "discovery_timeout": 5,
    "agent_down_after": 8,
    "sync_lease": 1.5,
}


def conductors(api: Service) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in get(api, "/v2/conductors")["conductors"]}


def lease_metric(conductor: Service, outcome: str) -> float:
    with internal_client() as client:
        text = client.get(conductor.url + "/metrics").text
    found = re.search(rf'^accel_sync_leases_total{{outcome="{outcome}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def new_gpu(node: Node, bus: int) -> str:
    """Plugs a GPU into a node's tree; its uuid."""
    address = f"0000:{bus:02x}:00.0"
    node.tree.add(FakeFunction(address, 0x10DE, 0x2331, 0x030200, driver="nvidia"))
    return next(
        str(e.uuid)
        for e in discover(Kind.GPU, node.tree.root, node.name)
        if e.pci is not None and e.pci.address == address
    )


def pull_gpu(node: Node, address: str) -> str:
    """Takes a GPU out of a node's tree; the uuid it had."""
    [uuid] = [
        str(e.uuid)
        for e in discover(Kind.GPU, node.tree.root, node.name)
        if e.pci is not None and e.pci.address == address
    ]
    node.tree.remove(address)
    return uuid


def start_fleet(
    cluster: Cluster, database: str, workdir: Path, count: int = 3
) -> tuple[list[Service], Service, list[Node]]:
    pair = [cluster.conductor(database, **FLEET_CONDUCTOR) for _ in range(2)]
    api = cluster.api(database)
    nodes = make_nodes(workdir, count, (Kind.GPU,))
    for i, node in enumerate(nodes):
        # Half the agents prefer each conductor, so both take hellos.
        order = [pair[i % 2].url, pair[(i + 1) % 2].url]
        start_node(cluster, node, order, FAST_AGENT, **FAST_DRIVER)
    wait_for_truth(api, nodes, cluster)
    return pair, api, nodes


def restart_driver(cluster: Cluster, node: Node) -> None:
    assert node.agent is not None
    cluster.discard(node.drivers[Kind.GPU])
    node.drivers[Kind.GPU] = cluster.driver("GPU", node.agent, node.tree.root, **FAST_DRIVER)


def restart_agent(cluster: Cluster, node: Node) -> None:
    assert node.agent is not None
    node.agent = cluster.restart(node.agent)


def test_a_conductor_killed_holding_a_sync_lease_is_taken_over(
    cluster: Cluster, postgres: ThrowawayPostgres, tmp_path: Path
) -> None:
    database = postgres.new_database()
    pair, api, nodes = start_fleet(cluster, database, tmp_path)
    listed = conductors(api)
    assert sorted(listed) == sorted(c.endpoint for c in pair)
    assert all(c["alive"] for c in listed.values())
    synced = [name for c in listed.values() for name in c["synced_agents"]]
    assert sorted(synced) == [node.name for node in nodes]  # each agent synced by one

    # The chosen moment: node0's agent stops answering, so a conductor's sync of it
    # hangs, holding the lease; that conductor dies, and node0's hardware changes.
    target = nodes[0]
    assert target.agent is not None
    target.agent.pause()

    def holder() -> str | None:
        return next(
            (name for name, c in conductors(api).items() if target.name in c["sync_leases"]),
            None,
        )

    victim_name = wait_until(holder, "a conductor to hold node0's sync lease")
    victim = next(c for c in pair if c.endpoint == victim_name)
    survivor = next(c for c in pair if c is not victim)
    pulled = pull_gpu(target, "0000:31:00.0")
    victim.kill()
    target.agent.resume()

    wait_for_truth(api, nodes, cluster, {pulled})
    listed = conductors(api)
    assert target.name in listed[survivor.endpoint]["synced_agents"]
    assert lease_metric(survivor, "taken_over") >= 1
    wait_until(lambda: not conductors(api)[victim.endpoint]["alive"], "the victim shown dead")

    cluster.restart(victim)  # same name: it gives back nothing stale, takes work again
    wait_until(lambda: conductors(api)[victim.endpoint]["alive"], "the victim alive again")
    restarted = conductors(api)[victim.endpoint]["started_at"]
    assert restarted > listed[victim.endpoint]["started_at"]
    cli = subprocess.run(
        [sys.executable, "-m", "accel", "conductors", "list", "--json", "--api-url", api.url],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert sorted(c["name"] for c in json.loads(cli.stdout)) == sorted(listed)
    wait_for_truth(api, nodes, cluster, {pulled})
    replica = cluster.api(database)  # api replicas serve the same data
    assert hardware(replica, "all") == hardware(api, "all")
    assert get(replica, "/v2/alarms", state="all") == get(api, "/v2/alarms", state="all")


def test_kill_nine_a_driver_an_agent_and_a_random_part(
    cluster: Cluster, postgres: ThrowawayPostgres, tmp_path: Path
) -> None:
    seed = int(os.environ.get("ACCEL_FAULT_SEED", random.randrange(2**32)))
    print(f"fault seed {seed} (replay: ACCEL_FAULT_SEED={seed})")
    rng = random.Random(seed)
    pair, api, nodes = start_fleet(cluster, postgres.new_database(), tmp_path)
    vanished: set[str] = set()

    # A driver dies just as its node gains a GPU; while it is away its node's
    # hardware must not vanish; back, it reports the new GPU.
    new_gpu(nodes[1], 0xE1)
    nodes[1].drivers[Kind.GPU].kill()
    restart_driver(cluster, nodes[1])
    wait_for_truth(api, nodes, cluster, vanished)

    # An agent dies while its node loses a GPU; restarted, it reports the loss.
    assert nodes[2].agent is not None
    nodes[2].agent.kill()
    vanished.add(pull_gpu(nodes[2], "0000:17:00.0"))
    restart_agent(cluster, nodes[2])
    wait_for_truth(api, nodes, cluster, vanished)

    # A part drawn at random dies at a random moment of the resync after a change.
    node = rng.choice(nodes)
    victim_kind = rng.choice(["driver", "agent", "conductor"])
    delay = rng.uniform(0.0, 1.5)
    print(f"random fault: {victim_kind} of {node.name} after {delay:.2f}s")
    new_gpu(node, 0xE2)
    time.sleep(delay)  # the moment, not a threshold: nothing is asserted about speed
    if victim_kind == "driver":
        node.drivers[Kind.GPU].kill()
        restart_driver(cluster, node)
    elif victim_kind == "agent":
        assert node.agent is not None
        node.agent.kill()
        restart_agent(cluster, node)
    else:
        conductor = rng.choice(pair)
        conductor.kill()
        cluster.restart(conductor)
    wait_for_truth(api, nodes, cluster, vanished)


def test_postgresql_restarts_under_a_running_conductor_and_api(
    cluster: Cluster, postgres: ThrowawayPostgres, tmp_path: Path
) -> None:
    database = postgres.new_database()
    conductor = cluster.conductor(database, **FLEET_CONDUCTOR)
    api = cluster.api(database)
    [node] = make_nodes(tmp_path, 1, (Kind.GPU,))
    start_node(cluster, node, [conductor.url], FAST_AGENT, **FAST_DRIVER)
    wait_for_truth(api, [node], cluster)

    postgres.restart()  # every pooled connection of both processes is now dead
    # The api's first answer after the restart is already right: stale connections
    # are replaced before use (pre-ping), not handed to the request.
    answer = httpx.get(api.url + "/v2/hardware", timeout=10)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["hardware"]) == len(node.truth())

    pulled = {pull_gpu(node, "0000:b1:00.0")}  # the conductor must still sync and write
    wait_for_truth(api, [node], cluster, pulled)

    # The database dies (immediate stop: no checkpoint, backends killed, crash
    # recovery) while the conductor resyncs every second: whether a sync is mid-way
    # or between rounds at that instant is the machine's choice, not the test's
    # (a test that waits to see a lease held depends on catching a brief moment).
    pulled.add(pull_gpu(node, "0000:ca:00.0"))
    postgres.restart(mode="immediate")
    wait_for_truth(api, [node], cluster, pulled)
    # Both stop cleanly, and no loop died of the outage: a loop that did leaves its
    # traceback in the log when the process shuts down.
    for process in (conductor, api):
        assert process.stop() == 0, process.log()
        assert "Traceback" not in process.log_path.read_text(), process.log()


def alarms_raised(conductor: Service, kind: str) -> float:
    with internal_client() as client:
        text = client.get(conductor.url + "/metrics").text
    found = re.search(rf'^accel_alarms_raised_total{{kind="{kind}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_two_conductors_sweeping_raise_each_agent_down_alarm_once(
    cluster: Cluster, postgres: ThrowawayPostgres
) -> None:
    database = postgres.new_database()
    quick: dict[str, Setting] = {
        "heartbeat_interval": 0.5,
        "agent_down_after": 1,
        "resync_interval": 60,
    }
    pair = [cluster.conductor(database, **quick) for _ in range(2)]
    api = cluster.api(database)
    names = [f"node{i}" for i in range(4)]
    nodes = [cluster.agent([c.url for c in pair], name, **FAST_AGENT) for name in names]
    wait_until(lambda: sorted(get_agents(api)) == names, "every agent registered")

    for agent in nodes:
        agent.kill()  # both conductors' sweeps now race to mark them DOWN
    wait_until(
        lambda: {a["state"] for a in get_agents(api).values()} == {AgentState.DOWN},
        "every agent DOWN",
        on_timeout=cluster.logs,
    )
    raised = [(a["kind"], a["subject"]) for a in get(api, "/v2/alarms", state="all")["alarms"]]
    assert sorted(raised) == [(AlarmKind.AGENT_DOWN, name) for name in names]
    assert sum(alarms_raised(c, AlarmKind.AGENT_DOWN) for c in pair) == len(names)


def test_a_conductor_stopped_cleanly_gives_its_sync_leases_back(
    cluster: Cluster, postgres: ThrowawayPostgres
) -> None:
    database = postgres.new_database()
    # Leases long enough that only the clean stop can have freed one within the test.
    # A paused agent stays UP (a long --agent-down-after), so its syncs are claimed.
    patient: dict[str, Setting] = {
        "sync_lease": 600,
        "discovery_timeout": 60,
        "agent_down_after": 600,
    }
    conductor = cluster.conductor(database, **patient, resync_interval=1)
    api = cluster.api(database)
    agent = cluster.agent([conductor.url], "node0", **FAST_AGENT)
    wait_until(lambda: get_agents(api).get("node0", {}).get("last_synced_at"), "a first sync")
    agent.pause()  # the next sync of node0 hangs, holding its lease

    def holding() -> bool:
        return conductors(api).get(conductor.endpoint, {}).get("sync_leases") == ["node0"]

    wait_until(holding, "the conductor to hold node0's sync lease", on_timeout=cluster.logs)
    assert conductor.stop() == 0
    assert conductors(api)[conductor.endpoint]["sync_leases"] == []
    agent.resume()
