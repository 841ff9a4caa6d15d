"""The hardware ETag an agent's hellos carry (internal version 1.5): fresh from a
discovery for each heartbeat; a retry after an unanswered hello reuses the last one
while it is younger than a heartbeat interval."""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from accel.internal.client import InternalClient
from accel.internal.schemas import HardwareList
from accel.internal.versions import HEADER, VersionRange, format_version
from accel.sim.servers import ServerGroup
from accel.sockets import bind, endpoint_of
from tests.agent.nodes import hello_only_conductor, node_agent

TOKEN = "agent-hello-etag-test-token-0123456789"
HEARTBEAT = 60.0


def hellos_through_an_outage() -> list[dict[str, Any]]:
    """An agent's hellos to a conductor that refuses the first and answers the rest:
    a heartbeat, a retry, and a retry after the last ETag has aged."""
    received: list[dict[str, Any]] = []

    async def hello(request: Request) -> Response:
        received.append(await request.json())
        if len(received) == 1:
            return JSONResponse({"error": "overloaded"}, status_code=503)
        return JSONResponse({"status": "registered", "known": True})

    async def scenario() -> None:
        group, sock = ServerGroup(), bind("127.0.0.1:0")
        conductor = endpoint_of(sock)
        agent = node_agent(conductor, TOKEN, HEARTBEAT)
        agent._client = InternalClient(TOKEN, VersionRange(), attempts=1)
        agent._conductor_client = InternalClient(TOKEN, VersionRange(), attempts=1)
        try:
            await group.start(hello_only_conductor(hello), sock)
            assert not await agent._hello_some_conductor(fresh_etag=True)
            assert await agent._hello_some_conductor(fresh_etag=False)
            assert agent._recent_etag is not None
            _, version, registry, etag = agent._recent_etag
            agent._recent_etag = (time.monotonic() - HEARTBEAT - 1, version, registry, etag)
            assert await agent._hello_some_conductor(fresh_etag=False)
        finally:
            await agent._client.aclose()
            await agent._conductor_client.aclose()
            await agent.discoveries.close()
            await group.stop()

    asyncio.run(scenario())
    return received


def test_a_retry_reuses_the_last_etag_while_it_is_young() -> None:
    refused, retried, aged = hellos_through_an_outage()
    assert refused["inventory_etag"].startswith('"')
    assert retried["inventory_etag"] == refused["inventory_etag"]
    assert "inventory_etag" not in aged


def hellos_around_a_slow_discovery(heartbeat: float, discovery: float) -> list[dict[str, Any]]:
    """The first two hellos of an agent whose every discovery takes ``discovery`` s."""
    received: list[dict[str, Any]] = []
    two_hellos = asyncio.Event()

    async def hello(request: Request) -> Response:
        received.append(await request.json())
        if len(received) == 2:
            two_hellos.set()
        newest = format_version(VersionRange().maximum)  # as a conductor of 1.5 or later
        return JSONResponse(
            {"status": "registered", "known": True, "max_version": newest},
            headers={HEADER: newest},
        )

    async def scenario() -> None:
        group, sock = ServerGroup(), bind("127.0.0.1:0")
        agent = node_agent(endpoint_of(sock), TOKEN, heartbeat)
        discover = agent._discover_all

        async def slow_discovery() -> HardwareList:
            await asyncio.sleep(discovery)
            return await discover()

        agent._discover_all = slow_discovery  # type: ignore[method-assign]
        agent._client = InternalClient(TOKEN, VersionRange(), attempts=1)
        agent._conductor_client = InternalClient(TOKEN, VersionRange(), attempts=1)
        await group.start(hello_only_conductor(hello), sock)
        heartbeats = asyncio.create_task(agent.heartbeat_forever())
        try:
            async with asyncio.timeout(3 * heartbeat):
                await two_hellos.wait()
        finally:
            heartbeats.cancel()
            with suppress(asyncio.CancelledError):
                await heartbeats
            await agent._client.aclose()
            await agent._conductor_client.aclose()
            await agent.discoveries.close()
            await group.stop()

    asyncio.run(scenario())
    return received[:2]


def test_a_discovery_that_overran_its_hello_sends_its_etag_in_a_hello_of_its_own() -> None:
    # The hello waits half the interval (2 s) for the 3 s discovery, then goes without
    # an ETag; the discovery's ETag follows as soon as it is known. A second hello on
    # the interval's beat would have waited for a discovery of its own, as slow, and
    # carried no ETag either.
    on_time, late = hellos_around_a_slow_discovery(heartbeat=4.0, discovery=3.0)
    assert "inventory_etag" not in on_time
    assert late["inventory_etag"].startswith('"')
    assert late["name"] == on_time["name"]
