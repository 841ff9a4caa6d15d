"""A simulated fleet: per node, the production agent and drivers on their own ports.

Every node is an ``AgentService`` and one ``DriverService`` per kind it has, exactly
as ``accel agent`` and ``accel driver`` run them, only sharing one process and event
loop: hellos, discovery, heartbeats and failover are the real code over real HTTP on
loopback. Drivers start first, so that their hellos wait in the agent's listening
queue. Agents start with no conductor to greet; once every node is up (each agent
knows all its drivers) ``release`` hands them their conductors and they all say
hello at once, as a fleet does when its network comes back: the conductor sees the
whole fleet arrive, and thousands of starting nodes do not flood it (or the
simulator's own event loop) with retries in the meantime.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread

from accel.agent.service import AgentService, AgentSettings
from accel.driver.service import DriverService, DriverSettings
from accel.internal.intervals import DRIVER_TIMEOUT, HEARTBEAT_INTERVAL, HELLO_INTERVAL
from accel.internal.schemas import HardwareEntry, Kind
from accel.internal.versions import VersionRange
from accel.sim.plan import (
    NodePlan,
    TemplateDiscoverer,
    build_template,
    build_templates,
    plan_fleet,
)
from accel.sim.servers import ServerGroup
from accel.sockets import bind, endpoint_of

log = logging.getLogger(__name__)

DISCOVERY_THREADS = 4


@dataclass(frozen=True)
class SimSettings:
    conductors: tuple[str, ...]
    nodes: int
    devices_per_node: int
    token: str
    tree_dir: Path
    seed: int = 0
    prefix: str = "sim"
    versions: VersionRange = field(default_factory=VersionRange)
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    hello_interval: float = HELLO_INTERVAL
    driver_timeout: float = DRIVER_TIMEOUT
    # Nodes being started at once: enough to start thousands quickly, few enough
    # that the first discoveries do not all queue for the same worker threads.
    start_concurrency: int = 32


@dataclass
class SimNode:
    plan: NodePlan
    agent: AgentService
    drivers: dict[Kind, DriverService]

    @property
    def ready(self) -> bool:
        return {d.kind for d in self.agent.drivers.all()} == set(self.plan.devices)

    def manifest(self) -> dict[str, Any]:
        return {
            "name": self.plan.name,
            "endpoint": self.agent.settings.endpoint,
            "hardware": {
                kind.value: [str(entry.uuid) for entry in driver.discoveries.result]
                for kind, driver in self.drivers.items()
            },
        }


class Fleet:
    """The nodes of one simulator process, started and stopped together."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.plans = plan_fleet(
            settings.nodes, settings.devices_per_node, settings.seed, settings.prefix
        )
        self.nodes: list[SimNode] = []
        self.group = ServerGroup()
        # Every template's reading, shared by the nodes' discoverers (TemplateDiscoverer).
        self.readings: dict[Path, list[HardwareEntry]] = {}

    async def start(self) -> None:
        templates = build_templates(self.settings.tree_dir, self.plans)
        # Discoveries run in worker threads; a few at a time leave the event loop,
        # which serves every node, its share of the interpreter.
        anyio.to_thread.current_default_thread_limiter().total_tokens = DISCOVERY_THREADS
        gate = asyncio.Semaphore(self.settings.start_concurrency)

        async def start_one(plan: NodePlan) -> None:
            async with gate:
                await self._start_node(plan, templates)

        # Thousands of servers make millions of long-lived objects; a full garbage
        # collection over them stalls the event loop for seconds (requests time out).
        # They are frozen out of collection once built, and collections made rarer.
        gc.disable()
        try:
            await asyncio.gather(*(start_one(plan) for plan in self.plans))
        finally:
            # Once, before the hellos are released: a freeze keeps the cycles left by
            # the start (requests' retry states, their exceptions) for good otherwise.
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 50, 1000)
            gc.enable()

    async def _start_node(self, plan: NodePlan, templates: dict[tuple[Kind, int], Path]) -> None:
        settings = self.settings
        agent_sock = bind("127.0.0.1:0")
        agent = AgentService(
            AgentSettings(
                name=plan.name,
                conductors=(),  # until release()
                endpoint=endpoint_of(agent_sock),
                token=settings.token,
                versions=settings.versions,
                heartbeat_interval=settings.heartbeat_interval,
                driver_timeout=settings.driver_timeout,
            )
        )
        drivers: dict[Kind, DriverService] = {}
        for kind, count in plan.devices.items():
            sock = bind("127.0.0.1:0")
            driver = DriverService(
                DriverSettings(
                    discoverer=TemplateDiscoverer(
                        kind, templates[(kind, count)], readings=self.readings
                    ),
                    agent=f"http://{agent.settings.endpoint}",
                    endpoint=endpoint_of(sock),
                    token=settings.token,
                    versions=settings.versions,
                    node=plan.name,
                    hello_interval=settings.hello_interval,
                    health_interval=None,
                )
            )
            drivers[kind] = driver
            await self.group.start(driver.app(), sock)
        await self.group.start(agent.app(), agent_sock)
        self.nodes.append(SimNode(plan, agent, drivers))

    async def wait_ready(self) -> None:
        """Until every agent knows all of its node's drivers."""
        while True:
            if all(node.ready for node in self.nodes):
                return
            await asyncio.sleep(0.1)

    async def release(self, per_second: float = 0) -> None:
        """Every agent says hello to its conductors, and heartbeats from then on: all at
        once, or ``per_second`` of them each second. One process plays every node, so
        its event loop, not the conductor, limits how many hellos and syncs go through
        at once; past that, requests time out and retries pile on."""
        batch = len(self.nodes) if per_second <= 0 else max(1, round(per_second / 10))
        for start in range(0, len(self.nodes), batch):
            for node in self.nodes[start : start + batch]:
                node.agent.heartbeat.report_to(self.settings.conductors)
            if start + batch < len(self.nodes):
                await asyncio.sleep(0.1)

    def manifest(self) -> dict[str, Any]:
        nodes = sorted(self.nodes, key=lambda node: node.plan.name)
        return {
            "seed": self.settings.seed,
            "devices_per_node": self.settings.devices_per_node,
            "nodes": [node.manifest() for node in nodes],
        }

    def write_manifest(self, path: Path) -> None:
        staging = path.with_suffix(".tmp")
        staging.write_text(json.dumps(self.manifest(), indent=1))
        staging.replace(path)  # readers never see half a file

    def change_hardware(self, share: float, seed: int) -> list[str]:
        """Changes ``share`` of the fleet's hardware: one card per chosen node is rebound
        to vfio-pci, as an operator handing it to a VM would. Returns the nodes changed;
        their drivers see it at their next discovery, the conductor at its next resync."""
        rng = random.Random(seed)
        count = max(1, round(sum(node.plan.total for node in self.nodes) * share))
        changed = []
        for node in rng.sample(self.nodes, min(count, len(self.nodes))):
            kind, service = next(iter(node.drivers.items()))
            discoverer = service.settings.discoverer
            assert isinstance(discoverer, TemplateDiscoverer)
            root = build_template(
                self.settings.tree_dir / "changed", kind, node.plan.devices[kind], rebind=True
            )
            service.settings = dataclasses.replace(
                service.settings,
                discoverer=dataclasses.replace(discoverer, sysfs_root=root, memory={}),
            )
            changed.append(node.plan.name)
        return changed

    async def stop(self) -> None:
        await self.group.stop()
