"""The truth about a fleet of fake nodes, and checks that the database tells it.

The truth is the union of the nodes' fake trees, discovered here in the test with
the drivers' own code. The database tells it when, through the public API: every
device of every tree is present exactly once, nothing else is present, nothing
present is also listed as vanished, and the active alarms are exactly the ones the
test expects (no agent left DOWN, no alarm for hardware that is there).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Set
from dataclasses import dataclass, field
from pathlib import Path

from accel.cli.argv import Setting
from accel.driver.discovery import discover
from accel.driver.fake_sysfs import FakeSysfs, build_gpu_server
from accel.internal.schemas import Kind
from accel.states import AgentState, AlarmKind
from tests.integration.fleet import agents, alarms, hardware
from tests.processes import Cluster, Service, wait_until


@dataclass
class Node:
    name: str
    tree: FakeSysfs
    kinds: tuple[Kind, ...]
    agent: Service | None = None
    drivers: dict[Kind, Service] = field(default_factory=dict)

    def truth(self) -> set[str]:
        return {
            str(e.uuid) for kind in self.kinds for e in discover(kind, self.tree.root, self.name)
        }


def make_nodes(workdir: Path, count: int, kinds: tuple[Kind, ...]) -> list[Node]:
    return [Node(f"node{i}", build_gpu_server(workdir / f"node{i}"), kinds) for i in range(count)]


def start_node(
    cluster: Cluster,
    node: Node,
    conductors: list[str],
    agent_settings: dict[str, Setting],
    **driver_settings: Setting,
) -> None:
    node.agent = cluster.agent(conductors, node.name, **agent_settings)
    for kind in node.kinds:
        node.drivers[kind] = cluster.driver(
            kind.value, node.agent, node.tree.root, **driver_settings
        )


def problems(api: Service, nodes: list[Node], vanished_alarms: Set[str]) -> list[str]:
    """What the API says that is not the truth; empty when it is."""
    truth = set().union(*(node.truth() for node in nodes))
    present = [entry["uuid"] for entry in hardware(api, "present")]
    gone = {entry["uuid"] for entry in hardware(api, "vanished")}
    found = []
    duplicates = [uuid for uuid, count in Counter(present).items() if count > 1]
    if duplicates:
        found.append(f"listed twice: {duplicates}")
    if truth - set(present):
        found.append(f"missing: {sorted(truth - set(present))}")
    if set(present) - truth:
        found.append(f"present but not in any tree: {sorted(set(present) - truth)}")
    if gone & truth:
        found.append(f"marked vanished but there: {sorted(gone & truth)}")
    down = [name for name, agent in agents(api).items() if agent["state"] != AgentState.UP]
    if down:
        found.append(f"agents not UP: {down}")
    expected = {(AlarmKind.HARDWARE_VANISHED, uuid) for uuid in vanished_alarms}
    active = alarms(api)
    if Counter(active) != Counter(expected):
        found.append(f"active alarms {sorted(active)}, expected {sorted(expected)}")
    return found


def wait_for_truth(
    api: Service, nodes: list[Node], cluster: Cluster, vanished_alarms: Set[str] = frozenset()
) -> None:
    """Waits until the API tells the truth; on giving up, says what still differs."""
    last: list[str] = []

    def true() -> bool:
        nonlocal last
        last = problems(api, nodes, set(vanished_alarms))
        return not last

    wait_until(
        true,
        "the database to equal the union of the nodes' trees",
        timeout=60,
        on_timeout=lambda: "\n".join(last) + "\n" + cluster.logs(),
    )
