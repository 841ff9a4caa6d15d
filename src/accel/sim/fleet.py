"""A simulated fleet: per node, the production agent and drivers on their own ports.

Every node is an ``AgentService`` and one ``DriverService`` per kind it has, exactly
as ``accel agent`` and ``accel driver`` run them, only sharing one process and event
loop: hellos, discovery, heartbeats and failover are the real code over real HTTP on
loopback. Drivers start first, so that their hellos wait in the agent's listening
queue and most agents know their drivers before their first hello to a conductor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accel.agent.service import AgentService, AgentSettings
from accel.driver.discovery import Discoverer
from accel.driver.service import DriverService, DriverSettings
from accel.internal.schemas import Kind
from accel.internal.versions import VersionRange
from accel.sim.plan import NodePlan, build_template, build_templates, plan_fleet
from accel.sim.servers import ServerGroup
from accel.sockets import bind, endpoint_of

log = logging.getLogger(__name__)


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
    heartbeat_interval: float = 10.0
    hello_interval: float = 10.0
    driver_timeout: float = 10.0
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
        return set(self.agent.drivers) == set(self.plan.devices)

    def manifest(self) -> dict[str, Any]:
        return {
            "name": self.plan.name,
            "endpoint": self.agent.settings.endpoint,
            "hardware": {
                kind.value: [str(entry.uuid) for entry in driver.discoveries.result]
                for kind, driver in self.drivers.items()
            },
        }


def raise_file_limit() -> int:
    """Every node holds several sockets: take all the descriptors the system allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Fleet:
    """The nodes of one simulator process, started and stopped together."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.plans = plan_fleet(
            settings.nodes, settings.devices_per_node, settings.seed, settings.prefix
        )
        self.nodes: list[SimNode] = []
        self.group = ServerGroup()

    async def start(self) -> None:
        templates = build_templates(self.settings.tree_dir, self.plans)
        gate = asyncio.Semaphore(self.settings.start_concurrency)

        async def start_one(plan: NodePlan) -> None:
            async with gate:
                await self._start_node(plan, templates)

        await asyncio.gather(*(start_one(plan) for plan in self.plans))

    async def _start_node(self, plan: NodePlan, templates: dict[tuple[Kind, int], Path]) -> None:
        settings = self.settings
        agent_sock = bind("127.0.0.1:0")
        agent = AgentService(
            AgentSettings(
                name=plan.name,
                conductors=settings.conductors,
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
                    discoverer=Discoverer(kind, templates[(kind, count)]),
                    agent=f"http://{agent.settings.endpoint}",
                    endpoint=endpoint_of(sock),
                    token=settings.token,
                    versions=settings.versions,
                    node=plan.name,
                    hello_interval=settings.hello_interval,
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
            root = build_template(
                self.settings.tree_dir / "changed", kind, node.plan.devices[kind], rebind=True
            )
            service.settings = dataclasses.replace(
                service.settings, discoverer=dataclasses.replace(discoverer, sysfs_root=root)
            )
            changed.append(node.plan.name)
        return changed

    async def stop(self) -> None:
        await self.group.stop()
