"""kill -9 of an agent, a driver and the conductor in the middle of a resync.

The moment is made, not drawn: the node's agent (or driver) is paused, so that the
conductor's resync of it hangs holding its sync lease, and the part is killed then.
Afterwards the inventory is whole (nothing vanished for a part that died), and once
the part is back the next resync completes: a change made meanwhile is seen.
"""

from __future__ import annotations

from pathlib import Path

from accel.internal.schemas import Kind
from tests.integration.fleet import FAST_AGENT, FAST_DRIVER, agents
from tests.integration.test_fleet_faults import (
    FLEET_CONDUCTOR,
    conductors,
    pull_gpu,
    restart_agent,
    restart_driver,
)
from tests.integration.truth import Node, make_nodes, start_node, wait_for_truth
from tests.processes import Cluster, Service, wait_until


def fleet(cluster: Cluster, database: str, workdir: Path) -> tuple[Service, Service, list[Node]]:
    # A part killed here is back, or the check done, long before its agent could be
    # called DOWN: these tests are about the inventory (liveness is test_fleet_faults'),
    # and a DOWN timer racing a loaded machine's checks made them flaky.
    conductor = cluster.conductor(database, **{**FLEET_CONDUCTOR, "agent_down_after": 120})
    api = cluster.api(database)
    nodes = make_nodes(workdir, 2, (Kind.GPU,))
    for node in nodes:
        start_node(cluster, node, [conductor.url], FAST_AGENT, **FAST_DRIVER)
    wait_for_truth(api, nodes, cluster)
    return conductor, api, nodes


def resync_in_flight(api: Service, conductor: Service, node: Node) -> None:
    wait_until(
        lambda: node.name in conductors(api).get(conductor.endpoint, {}).get("sync_leases", []),
        f"a resync of {node.name} in flight",
    )


def test_an_agent_killed_mid_resync(cluster: Cluster, sqlite_url: str, tmp_path: Path) -> None:
    conductor, api, nodes = fleet(cluster, sqlite_url, tmp_path)
    node = nodes[0]
    assert node.agent is not None
    node.agent.pause()
    resync_in_flight(api, conductor, node)
    node.agent.kill()
    wait_until(lambda: agents(api)[node.name]["last_sync_error"], "the resync to fail")
    wait_for_truth(api, nodes, cluster)  # whole: nothing vanished, nothing alarmed
    pulled = {pull_gpu(node, "0000:31:00.0")}
    restart_agent(cluster, node)
    wait_for_truth(api, nodes, cluster, pulled)


def test_a_driver_killed_mid_resync(cluster: Cluster, sqlite_url: str, tmp_path: Path) -> None:
    conductor, api, nodes = fleet(cluster, sqlite_url, tmp_path)
    node = nodes[1]
    node.drivers[Kind.GPU].pause()  # the agent's discovery, and so the resync, waits
    resync_in_flight(api, conductor, node)
    node.drivers[Kind.GPU].kill()
    seen = agents(api)[node.name]["last_synced_at"]
    # A resync with the driver failed is stored, and vanishes nothing.
    wait_until(lambda: agents(api)[node.name]["last_synced_at"] != seen, "a resync stored")
    wait_for_truth(api, nodes, cluster)
    pulled = {pull_gpu(node, "0000:31:00.0")}
    restart_driver(cluster, node)
    wait_for_truth(api, nodes, cluster, pulled)


def test_the_conductor_killed_mid_resync(cluster: Cluster, sqlite_url: str, tmp_path: Path) -> None:
    conductor, api, nodes = fleet(cluster, sqlite_url, tmp_path)
    node = nodes[0]
    assert node.agent is not None
    node.agent.pause()
    resync_in_flight(api, conductor, node)
    conductor.kill()
    wait_for_truth(api, nodes, cluster)
    pulled = {pull_gpu(node, "0000:31:00.0")}
    node.agent.resume()
    cluster.restart(conductor)  # the same name: it gives back the lease it held
    wait_for_truth(api, nodes, cluster, pulled)
