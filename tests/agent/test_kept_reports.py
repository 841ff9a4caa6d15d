"""An agent keeps each driver's report as the text it answers with (``RenderedEntries``),
not as models: a sixth of the memory. Its answers, at its own version and at older
ones, are still those its drivers' entries make."""

from __future__ import annotations

import asyncio
import gc

from accel.agent.discovery import NodeReport
from accel.driver.discovery import Discoverer
from accel.driver.fake_sysfs import FakeSysfs
from accel.driver.pci_ids import PciIdDatabase
from accel.driver.service import DriverService, DriverSettings
from accel.internal.discovery_http import hardware_response
from accel.internal.schemas import HardwareEntry, Kind
from accel.internal.versions import NEWEST, OLDEST, Feature, VersionRange
from accel.sim.servers import ServerGroup
from accel.sockets import bind, endpoint_of
from tests.agent.nodes import node_agent

TOKEN = "agent-kept-reports-test-token-0123456789"
VERSIONS = (NEWEST, Feature.HELLO_ETAG.since, Feature.SETUP.since, OLDEST)


def models_held(root: object, limit: int = 100_000) -> int:
    """The HardwareEntry models reachable from ``root``."""
    seen, stack, found = {id(root)}, [root], 0
    while stack and len(seen) < limit:
        item = stack.pop()
        found += isinstance(item, HardwareEntry)
        for referent in gc.get_referents(item):
            if id(referent) not in seen and not isinstance(referent, type):
                seen.add(id(referent))
                stack.append(referent)
    return found


def discovered(tree: FakeSysfs) -> tuple[NodeReport, list[HardwareEntry]]:
    """An agent's discovery of one GPU driver on a loopback port, and the driver's entries."""

    async def scenario() -> tuple[NodeReport, list[HardwareEntry]]:
        group, sock = ServerGroup(), bind("127.0.0.1:0")
        driver = DriverService(
            DriverSettings(
                discoverer=Discoverer(Kind.GPU, tree.root, names=PciIdDatabase.empty()),
                agent="http://127.0.0.1:9",  # nobody: hellos fail and are retried, harmlessly
                endpoint=endpoint_of(sock),
                token=TOKEN,
                versions=VersionRange(),
                node="node1",
            )
        )
        agent = node_agent("127.0.0.1:9", TOKEN, 60.0)
        try:
            await group.start(driver.app(), sock)
            await agent.drivers.register(Kind.GPU, endpoint_of(sock))
            _, found = await agent.discovery.wait_for(agent.discovery.start(), 10.0)
            return found, driver.discoveries.result
        finally:
            await agent.aclose()
            await group.stop()

    return asyncio.run(scenario())


def test_an_agent_holds_its_drivers_reports_as_text_and_answers_as_the_entries(
    gpu_server: FakeSysfs,
) -> None:
    found, entries = discovered(gpu_server)
    assert len(entries) == 4 and [d.state for d in found.drivers] == ["ok"]
    assert models_held(found) == 0  # the old agent held the 4 entries parsed again
    for version in VERSIONS:
        kept = hardware_response(version, 1, found.hardware, found.drivers)
        made = hardware_response(version, 1, entries, found.drivers)
        assert kept.body == made.body, version
        assert kept.headers.get("etag") == made.headers.get("etag"), version
