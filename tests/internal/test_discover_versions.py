"""The client's discovery call against drivers of this release and of older ones."""

from __future__ import annotations

import asyncio

from accel.driver.discovery import Discoverer
from accel.driver.fake_sysfs import FakeSysfs
from accel.driver.pci_ids import PciIdDatabase
from accel.driver.service import DriverService, DriverSettings
from accel.internal.client import InternalClient, base_url
from accel.internal.schemas import Kind
from accel.internal.versions import DISCOVERY_WAIT_VERSION, VersionRange
from accel.sim.servers import ServerGroup
from accel.sockets import bind, endpoint_of

TOKEN = "discover-versions-test-token-0123456789"


async def serve_driver(group: ServerGroup, tree: FakeSysfs, versions: VersionRange) -> str:
    sock = bind("127.0.0.1:0")
    settings = DriverSettings(
        discoverer=Discoverer(Kind.GPU, tree.root, names=PciIdDatabase.empty()),
        agent="http://127.0.0.1:9",  # nobody: hellos fail and are retried, harmlessly
        endpoint=endpoint_of(sock),
        token=TOKEN,
        versions=versions,
        node="node1",
    )
    await group.start(DriverService(settings).app(), sock)
    return endpoint_of(sock)


def test_an_unchanged_driver_answers_304_to_the_etag_it_gave(gpu_server: FakeSysfs) -> None:
    async def scenario() -> None:
        group = ServerGroup()
        client = InternalClient(TOKEN, VersionRange())
        try:
            driver = await serve_driver(group, gpu_server, VersionRange())
            first = await client.discover_if_changed(driver, wait=10)
            assert first.report is not None and len(first.report.hardware) == 4
            assert first.etag is not None
            again = await client.discover_if_changed(driver, wait=10, etag=first.etag)
            assert again.report is None and again.etag == first.etag
            gpu_server.remove("0000:b1:00.0")
            changed = await client.discover_if_changed(driver, wait=10, etag=first.etag)
            assert changed.report is not None and len(changed.report.hardware) == 3
        finally:
            await client.aclose()
            await group.stop()

    asyncio.run(scenario())


def test_a_driver_gone_back_to_1_3_is_started_then_polled(gpu_server: FakeSysfs) -> None:
    async def scenario() -> None:
        group = ServerGroup()
        client = InternalClient(TOKEN, VersionRange())
        try:
            driver = await serve_driver(group, gpu_server, VersionRange.up_to("1.3"))
            # As if the client had met this driver before its rollback, at 1.4.
            client._peer_versions[base_url(driver)] = DISCOVERY_WAIT_VERSION
            found = await client.discover_if_changed(driver, wait=10, etag='"stale"')
            assert found.report is not None and len(found.report.hardware) == 4
            assert found.etag is None  # 1.3 gives no ETag
            assert client.peer_version(driver) == (1, 3)
        finally:
            await client.aclose()
            await group.stop()

    asyncio.run(scenario())


def test_a_peer_heard_speaking_1_4_gets_the_one_call_discovery(gpu_server: FakeSysfs) -> None:
    async def scenario() -> None:
        group = ServerGroup()
        client = InternalClient(TOKEN, VersionRange())
        try:
            driver = await serve_driver(group, gpu_server, VersionRange())
            # Met before its upgrade, at 1.3: polled, and no ETag.
            client._peer_versions[base_url(driver)] = (1, 3)
            before = await client.discover_if_changed(driver, wait=10)
            assert before.report is not None and before.etag is None
            # Its next hello comes at 1.4 (an upgraded peer): from then on, one call.
            client.peer_spoke(driver, DISCOVERY_WAIT_VERSION)
            after = await client.discover_if_changed(driver, wait=10)
            assert after.report is not None and after.etag is not None
        finally:
            await client.aclose()
            await group.stop()

    asyncio.run(scenario())
