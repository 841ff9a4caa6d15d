"""``accel sim`` as a real process against a real conductor and api: every simulated
node's hardware reaches the public API, exactly as the generated trees hold it."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path
from typing import Any

from accel.cli.argv import Setting, accel_argv
from accel.cli.sim import sim
from accel.driver.discovery import Discoverer
from accel.sim.plan import build_templates, plan_fleet
from accel.states import AgentState
from tests.integration.fleet import agents, get, wait_for_devices
from tests.processes import Cluster, Service, wait_until

NODES = 20
DEVICES_PER_NODE = 8
SEED = 7


def spawn_sim(cluster: Cluster, conductor: Service, tmp_path: Path, **settings: Setting) -> Service:
    """``accel sim`` for ``conductor``, its trees and manifest.json under ``tmp_path``."""
    argv = accel_argv(
        sim,
        conductor=conductor.url,
        seed=SEED,
        tree_dir=tmp_path / "trees",
        manifest=tmp_path / "manifest.json",
        **settings,
    )
    return cluster.spawn("sim", argv, None, "")


def test_every_simulated_node_reaches_the_api(
    cluster: Cluster, sqlite_url: str, tmp_path: Path
) -> None:
    conductor = cluster.conductor(sqlite_url)
    api = cluster.api(sqlite_url)
    manifest_path = tmp_path / "manifest.json"
    sim = spawn_sim(
        cluster,
        conductor,
        tmp_path,
        nodes=NODES,
        devices_per_node=DEVICES_PER_NODE,
    )
    devices = wait_for_devices(api, NODES * DEVICES_PER_NODE, on_timeout=cluster.logs)

    # What the API lists is what discovery finds in each node's generated tree,
    # computed here from the plan alone.
    plans = plan_fleet(NODES, DEVICES_PER_NODE, SEED)
    templates = build_templates(tmp_path / "expected-trees", plans)
    expected: dict[str, tuple[str, str]] = {}
    for plan in plans:
        assert plan.total == DEVICES_PER_NODE
        for kind, count in plan.devices.items():
            found = Discoverer(kind, templates[(kind, count)]).discover(plan.name)
            assert len(found) == count
            expected.update({str(entry.uuid): (plan.name, kind.value) for entry in found})
    listed = {d["uuid"]: (d["hostname"], d["type"]) for d in devices}
    assert listed == expected
    assert len({plan.name for plan in plans}) == NODES
    assert len({kind for plan in plans for kind in plan.devices}) > 1  # a mixed fleet

    # One deployable per card, every node an UP agent at its own port.
    deployables = get(api, "/v2/deployables")["deployables"]
    assert len(deployables) == NODES * DEVICES_PER_NODE
    known = agents(api)
    assert set(known) == {plan.name for plan in plans}
    assert all(agent["state"] == AgentState.UP for agent in known.values())
    assert len({agent["endpoint"] for agent in known.values()}) == NODES

    manifest: dict[str, Any] = wait_until(
        lambda: json.loads(manifest_path.read_text()) if manifest_path.exists() else None,
        "the simulator's manifest",
        on_timeout=cluster.logs,
    )
    by_node = Counter(hostname for hostname, _ in listed.values())
    for node in manifest["nodes"]:
        assert node["endpoint"] == known[node["name"]]["endpoint"]
        uuids = [u for found in node["hardware"].values() for u in found]
        assert by_node[node["name"]] == len(uuids) == DEVICES_PER_NODE
        assert all(
            listed[u] == (node["name"], kind)
            for kind, found in node["hardware"].items()
            for u in found
        )

    sim.process.send_signal(signal.SIGTERM)
    assert sim.process.wait(30) == 0


def test_a_held_fleet_says_hello_only_when_released(
    cluster: Cluster, sqlite_url: str, tmp_path: Path
) -> None:
    conductor = cluster.conductor(sqlite_url)
    api = cluster.api(sqlite_url)
    manifest_path = tmp_path / "manifest.json"
    sim = spawn_sim(cluster, conductor, tmp_path, nodes=3, release_on_signal=True)
    wait_until(manifest_path.exists, "the simulator's manifest", on_timeout=cluster.logs)
    # Every node is up, and until released none has a conductor to greet.
    assert agents(api) == {}
    sim.process.send_signal(signal.SIGUSR2)
    wait_for_devices(api, 3 * DEVICES_PER_NODE, on_timeout=cluster.logs)
    assert len(agents(api)) == 3
    sim.process.send_signal(signal.SIGTERM)
    assert sim.process.wait(30) == 0
