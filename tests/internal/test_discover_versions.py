"""The client's discovery call against drivers of this release and of older ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accel.driver.discovery import Discoverer
from accel.driver.fake_sysfs import FakeSysfs
from accel.driver.pci_ids import PciIdDatabase
from accel.driver.service import DriverService, DriverSettings
from accel.errors import PeerError
from accel.internal.client import Discovery, InternalClient, base_url
from accel.internal.schemas import Kind
from accel.internal.versions import Feature, VersionRange
from accel.sim.servers import ServerGroup
from accel.sockets import bind, endpoint_of

TOKEN = "discover-versions-test-token-0123456789"


@asynccontextmanager
async def driver_and_client(
    tree: FakeSysfs, versions: VersionRange
) -> AsyncIterator[tuple[str, InternalClient]]:
    """A GPU driver speaking ``versions`` on a loopback port, and a client of this release."""
    group = ServerGroup()
    client = InternalClient(TOKEN, VersionRange())
    sock = bind("127.0.0.1:0")
    settings = DriverSettings(
        discoverer=Discoverer(Kind.GPU, tree.root, names=PciIdDatabase.empty()),
        agent="http://127.0.0.1:9",  # nobody: hellos fail and are retried, harmlessly
        endpoint=endpoint_of(sock),
        token=TOKEN,
        versions=versions,
        node="node1",
    )
    try:
        await group.start(DriverService(settings).app(), sock)
        yield endpoint_of(sock), client
    finally:
        await client.aclose()
        await group.stop()


def test_an_unchanged_driver_answers_304_to_the_etag_it_gave(gpu_server: FakeSysfs) -> None:
    async def scenario() -> None:
        async with driver_and_client(gpu_server, VersionRange()) as (driver, client):
            first = await client.discover_if_changed(driver, wait=10)
            assert first.report is not None and len(first.report.hardware) == 4
            assert first.etag is not None
            again = await client.discover_if_changed(driver, wait=10, etag=first.etag)
            assert again.report is None and again.etag == first.etag
            gpu_server.remove("0000:b1:00.0")
            changed = await client.discover_if_changed(driver, wait=10, etag=first.etag)
            assert changed.report is not None and len(changed.report.hardware) == 3

    asyncio.run(scenario())


def test_a_driver_gone_back_to_1_3_is_started_then_polled(gpu_server: FakeSysfs) -> None:
    async def scenario() -> None:
        async with driver_and_client(gpu_server, VersionRange.up_to("1.3")) as (driver, client):
            # As if the client had met this driver before its rollback, at 1.4.
            client.peer_versions.remember(base_url(driver), Feature.DISCOVERY_WAIT.since)
            found = await client.discover_if_changed(driver, wait=10, etag='"stale"')
            assert found.report is not None and len(found.report.hardware) == 4
            assert found.etag is None  # 1.3 gives no ETag
            assert client.peer_version(driver) == (1, 3)

    asyncio.run(scenario())


def test_a_peer_heard_speaking_1_4_gets_the_one_call_discovery(gpu_server: FakeSysfs) -> None:
    async def scenario() -> None:
        async with driver_and_client(gpu_server, VersionRange()) as (driver, client):
            # Met before its upgrade, at 1.3: polled, and no ETag.
            client.peer_versions.remember(base_url(driver), (1, 3))
            before = await client.discover_if_changed(driver, wait=10)
            assert before.report is not None and before.etag is None
            # Its next hello comes at 1.4 (an upgraded peer): from then on, one call.
            client.peer_spoke(driver, Feature.DISCOVERY_WAIT.since)
            after = await client.discover_if_changed(driver, wait=10)
            assert after.report is not None and after.etag is not None

    asyncio.run(scenario())


EMPTY_REPORT = b'{"hardware": [], "generation": 1, "drivers": []}'


def odd_peer(etag: str, status: int, body: bytes = EMPTY_REPORT) -> Starlette:
    """A peer of 1.4 that answers every discovery with ``status``, ``etag`` and ``body``."""

    async def answer(request: Request) -> Response:
        headers = {"ETag": etag, "Accel-Internal-Version": "1.4"}
        if status == 304:
            return Response(status_code=304, headers=headers)
        return Response(body, headers=headers, media_type="application/json")

    async def root(request: Request) -> Response:
        return JSONResponse(
            {"versions": [{"id": "v1", "min_version": "1.0", "max_version": "1.4"}]}
        )

    return Starlette(routes=[Route("/", root), Route("/v1/discovery", answer, methods=["POST"])])


async def ask(app: Starlette, etag: str | None) -> Discovery:
    group = ServerGroup()
    client = InternalClient(TOKEN, VersionRange())
    sock = bind("127.0.0.1:0")
    try:
        await group.start(app, sock)
        return await client.discover_if_changed(endpoint_of(sock), wait=1, etag=etag)
    finally:
        await client.aclose()
        await group.stop()


def test_a_304_for_another_etag_than_the_one_sent_is_a_peer_error() -> None:
    with pytest.raises(PeerError, match="not the one sent"):
        asyncio.run(ask(odd_peer('"other"', 304), '"mine"'))
    with pytest.raises(PeerError, match="not the one sent"):
        asyncio.run(ask(odd_peer('"mine"', 304), None))  # nothing was sent


def test_an_etag_too_long_to_store_is_not_kept() -> None:
    found = asyncio.run(ask(odd_peer('"' + "a" * 200 + '"', 200), None))
    assert found.report is not None and found.etag is None
    kept = asyncio.run(ask(odd_peer('"short"', 200), None))
    assert kept.etag == '"short"'


@pytest.mark.parametrize(
    "body",
    [
        b"<html>not a report</html>",
        EMPTY_REPORT[:-1],
        b'{"hardware": "none", "generation": 1}',
        b'{"hardware": [{"uuid": "not-a-uuid"}], "generation": 1}',
        b"[]",
    ],
    ids=["not-json", "cut-short", "wrong-type", "bad-entry", "array"],
)
def test_a_report_that_is_not_one_is_a_peer_error(body: bytes) -> None:
    """Nothing of it is taken: the sync fails, and the stored inventory stands."""
    with pytest.raises(PeerError, match="answered garbage"):
        asyncio.run(ask(odd_peer('"e"', 200, body), None))
