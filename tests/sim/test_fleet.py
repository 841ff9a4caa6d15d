"""A simulated fleet (accel.sim.fleet) in this process, against a conductor that only
takes hellos: every node is a real agent with one real driver per kind on loopback
ports, ready before it says anything, silent until released, then all at once.

One small fleet is started for the module; each test reads one promise off what it
did. tests/integration/test_sim.py runs ``accel sim`` against a real conductor.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from accel.internal.client import InternalClient
from accel.internal.endpoints import split_endpoint
from accel.internal.schemas import HardwareEntry
from accel.internal.versions import VersionRange
from accel.sim.fleet import Fleet, SimSettings
from accel.sim.plan import NodePlan
from accel.sim.servers import ServerGroup
from accel.sockets import bind, endpoint_of
from tests.agent.nodes import hello_only_conductor

TOKEN = "sim-secret"
NODES, DEVICES_PER_NODE, SEED = 4, 3, 5
DEADLINE = 60.0


@dataclass
class Observed:
    """What the fleet did, read at each stage of one run."""

    plans: list[NodePlan] = field(default_factory=list)
    drivers_known: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    driver_endpoints: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    agent_endpoints: dict[str, str] = field(default_factory=dict)
    hellos_before_release: list[str] = field(default_factory=list)
    hellos_after_release: set[str] = field(default_factory=set)
    manifest: dict[str, Any] = field(default_factory=dict)
    written: dict[str, Any] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    before_change: dict[str, list[HardwareEntry]] = field(default_factory=dict)
    after_change: dict[str, list[HardwareEntry]] = field(default_factory=dict)
    open_after_stop: list[str] = field(default_factory=list)
    garbage_frozen_at_start: int = -1


async def run_fleet(tmp_path: Path) -> Observed:
    observed = Observed()
    hellos: list[str] = []
    everyone = asyncio.Event()

    async def hello(request: Request) -> Response:
        hellos.append((await request.json())["name"])
        if len(set(hellos)) == NODES:
            everyone.set()
        return JSONResponse({"status": "registered", "known": True})

    conductor, conductor_sock = ServerGroup(), bind("127.0.0.1:0")
    await conductor.start(hello_only_conductor(hello), conductor_sock)
    fleet = Fleet(
        SimSettings(
            conductors=(endpoint_of(conductor_sock),),
            nodes=NODES,
            devices_per_node=DEVICES_PER_NODE,
            token=TOKEN,
            tree_dir=tmp_path / "trees",
            seed=SEED,
        )
    )
    client = InternalClient(TOKEN, VersionRange())
    try:
        await fleet.start()
        # Nothing ran since the start froze its objects: what a collection finds among
        # them now is what the freeze kept for good.
        gc.unfreeze()
        observed.garbage_frozen_at_start = gc.collect()
        gc.freeze()
        await asyncio.wait_for(fleet.wait_ready(), DEADLINE)
        observed.plans = fleet.plans
        for node in fleet.nodes:
            name = node.plan.name
            observed.drivers_known[name] = {
                (d.kind.value, d.endpoint) for d in node.agent.drivers.all()
            }
            observed.driver_endpoints[name] = {
                (kind.value, driver.settings.endpoint) for kind, driver in node.drivers.items()
            }
            observed.agent_endpoints[name] = node.agent.settings.endpoint
        observed.hellos_before_release = list(hellos)
        observed.manifest = fleet.manifest()
        fleet.write_manifest(tmp_path / "manifest.json")  # read back once all is stopped

        await fleet.release()
        await asyncio.wait_for(everyone.wait(), DEADLINE)
        observed.hellos_after_release = set(hellos)

        for node in fleet.nodes:
            driver = next(iter(node.drivers.values()))
            found = await client.discover(driver.settings.endpoint, wait=10)
            observed.before_change[node.plan.name] = found.hardware
        observed.changed = fleet.change_hardware(share=0.01, seed=SEED)
        for node in fleet.nodes:
            driver = next(iter(node.drivers.values()))
            found = await client.discover(driver.settings.endpoint, wait=10)
            observed.after_change[node.plan.name] = found.hardware
    finally:
        await client.aclose()
        await fleet.stop()
        await conductor.stop()
    return observed


def still_open(observed: Observed) -> list[str]:
    """The agents' and drivers' endpoints that still accept a connection."""
    served = [*observed.agent_endpoints.values()]
    for drivers in observed.driver_endpoints.values():
        served += [endpoint for _, endpoint in drivers]
    found = []
    for endpoint in served:
        with socket.socket() as probe:
            if probe.connect_ex(split_endpoint(endpoint)) == 0:
                found.append(endpoint)
    return found


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    # The fleet freezes its objects out of garbage collection and makes collections
    # rarer, for thousands of nodes; the rest of this test process keeps its own.
    thresholds = gc.get_threshold()
    folder = tmp_path_factory.mktemp("sim")
    try:
        observed = asyncio.run(run_fleet(folder))
        observed.written = json.loads((folder / "manifest.json").read_text())
        observed.leftovers = [path.name for path in folder.glob("manifest.*")]
        observed.open_after_stop = still_open(observed)
        yield observed
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_every_node_is_an_agent_that_knows_one_driver_per_planned_kind(
    observed: Observed,
) -> None:
    assert len(observed.plans) == NODES
    ports: set[int] = set()
    for plan in observed.plans:
        drivers = observed.driver_endpoints[plan.name]
        assert {kind for kind, _ in drivers} == {kind.value for kind in plan.devices}
        assert observed.drivers_known[plan.name] == drivers  # wait_ready: all registered
        for endpoint in [observed.agent_endpoints[plan.name], *(e for _, e in drivers)]:
            host, port = split_endpoint(endpoint)
            assert host == "127.0.0.1" and port not in ports
            ports.add(port)


def test_the_start_freezes_no_garbage(observed: Observed) -> None:
    # The cycles a start leaves are collected before its objects are frozen out of
    # collection, not kept for as long as the simulator runs.
    assert observed.garbage_frozen_at_start == 0


def test_nodes_are_silent_until_released_then_all_say_hello(observed: Observed) -> None:
    assert observed.hellos_before_release == []
    assert observed.hellos_after_release == {plan.name for plan in observed.plans}


def test_the_manifest_lists_each_nodes_hardware_as_planned_and_is_written_whole(
    observed: Observed,
) -> None:
    manifest = observed.manifest
    assert (manifest["seed"], manifest["devices_per_node"]) == (SEED, DEVICES_PER_NODE)
    nodes = manifest["nodes"]
    assert [node["name"] for node in nodes] == sorted(plan.name for plan in observed.plans)
    for node, plan in zip(nodes, sorted(observed.plans, key=lambda p: p.name), strict=True):
        assert node["endpoint"] == observed.agent_endpoints[plan.name]
        counts = {kind: len(uuids) for kind, uuids in node["hardware"].items()}
        assert counts == {kind.value: count for kind, count in plan.devices.items()}
    uuids = [uuid for node in nodes for found in node["hardware"].values() for uuid in found]
    assert len(set(uuids)) == NODES * DEVICES_PER_NODE  # every node's hardware its own
    assert observed.written == manifest
    assert observed.leftovers == ["manifest.json"]


def test_changed_hardware_is_seen_by_the_changed_nodes_next_discovery_only(
    observed: Observed,
) -> None:
    assert len(observed.changed) == 1  # 1% of 12 devices: at least one node
    for plan in observed.plans:
        before = {e.pci.address: e.pci.driver for e in observed.before_change[plan.name] if e.pci}
        after = {e.pci.address: e.pci.driver for e in observed.after_change[plan.name] if e.pci}
        if plan.name in observed.changed:
            assert after["0000:01:00.0"] == "vfio-pci" != before["0000:01:00.0"]
            assert {a: d for a, d in after.items() if a != "0000:01:00.0"} == {
                a: d for a, d in before.items() if a != "0000:01:00.0"
            }
        else:
            assert after == before


def test_stopping_closes_every_nodes_ports(observed: Observed) -> None:
    assert observed.open_after_stop == []
