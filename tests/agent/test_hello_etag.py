"""The hardware ETag an agent's hellos carry (internal version 1.5), over HTTP: fresh
from a discovery for each heartbeat; a retry after an unanswered hello reuses the last
one while it is younger than a heartbeat interval; a hello that asks for a resync
carries none, and one wanted while it was in flight is asked for again. The ETag
rules themselves, without a conductor, are in test_heartbeat."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accel.internal.schemas import Kind
from accel.internal.versions import HEADER, VersionRange, format_version
from accel.sim.servers import ServerGroup
from accel.sockets import bind, endpoint_of
from tests.agent.nodes import StoppedClock, hello_only_conductor, node_agent

TOKEN = "agent-hello-etag-test-token-0123456789"
HEARTBEAT = 60.0
NEWEST = format_version(VersionRange().maximum)


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
        group, sock, clock = ServerGroup(), bind("127.0.0.1:0"), StoppedClock()
        agent = node_agent(endpoint_of(sock), TOKEN, HEARTBEAT, clock)
        try:
            await group.start(hello_only_conductor(hello), sock)
            assert not await agent.heartbeat.hello(fresh_etag=True)
            assert await agent.heartbeat.hello(fresh_etag=False)
            clock.now += HEARTBEAT
            assert await agent.heartbeat.hello(fresh_etag=False)
        finally:
            await agent.aclose()
            await group.stop()

    asyncio.run(scenario())
    return received


def test_a_retry_reuses_the_last_etag_while_it_is_young() -> None:
    refused, retried, aged = hellos_through_an_outage()
    assert refused["inventory_etag"].startswith('"')
    assert retried["inventory_etag"] == refused["inventory_etag"]
    assert "inventory_etag" not in aged


def test_a_hello_that_asks_for_a_resync_carries_no_etag() -> None:
    received: list[dict[str, Any]] = []

    async def hello(request: Request) -> Response:
        received.append(await request.json())
        return JSONResponse({"status": "registered", "known": True})

    async def scenario() -> None:
        group, sock = ServerGroup(), bind("127.0.0.1:0")
        agent = node_agent(endpoint_of(sock), TOKEN, HEARTBEAT)
        try:
            await group.start(hello_only_conductor(hello), sock)
            agent.heartbeat.ask_resync()
            assert await agent.heartbeat.hello()
            assert await agent.heartbeat.hello()
        finally:
            await agent.aclose()
            await group.stop()

    asyncio.run(scenario())
    asking, confirming = received
    assert asking["resync"] and "inventory_etag" not in asking
    # Asked once: the next heartbeat confirms the hardware instead.
    assert not confirming["resync"] and confirming["inventory_etag"].startswith('"')


def test_a_resync_wanted_while_a_hello_asking_for_one_is_in_flight_is_asked_again() -> None:
    received: list[dict[str, Any]] = []

    async def scenario() -> None:
        group, sock = ServerGroup(), bind("127.0.0.1:0")
        agent = node_agent(endpoint_of(sock), TOKEN, HEARTBEAT)

        async def hello(request: Request) -> Response:
            received.append(await request.json())
            if len(received) == 1:
                agent.heartbeat.ask_resync()  # a driver registered meanwhile
            return JSONResponse({"status": "registered", "known": True})

        try:
            await group.start(hello_only_conductor(hello), sock)
            agent.heartbeat.ask_resync()
            for _ in range(3):
                assert await agent.heartbeat.hello()
        finally:
            await agent.aclose()
            await group.stop()

    asyncio.run(scenario())
    assert [body["resync"] for body in received] == [True, True, False]


def slow_driver(seconds: float) -> Starlette:
    """A driver whose every discovery takes ``seconds`` and finds nothing."""

    async def root(request: Request) -> Response:
        return JSONResponse({"versions": [{"max_version": NEWEST}]})

    async def discovery(request: Request) -> Response:
        await asyncio.sleep(seconds)
        return JSONResponse({"hardware": [], "generation": 1}, headers={HEADER: NEWEST})

    return Starlette(
        routes=[
            Route("/", root, methods=["GET"]),
            Route("/v1/discovery", discovery, methods=["POST"]),
        ]
    )


def hellos_around_a_slow_discovery(heartbeat: float, discovery: float) -> list[dict[str, Any]]:
    """The first two hellos of an agent whose every discovery takes ``discovery`` s."""
    received: list[dict[str, Any]] = []
    two_hellos = asyncio.Event()

    async def hello(request: Request) -> Response:
        received.append(await request.json())
        if len(received) == 2:
            two_hellos.set()
        # As a conductor of 1.5 or later.
        return JSONResponse(
            {"status": "registered", "known": True, "max_version": NEWEST},
            headers={HEADER: NEWEST},
        )

    async def scenario() -> None:
        group = ServerGroup()
        conductor, driver = bind("127.0.0.1:0"), bind("127.0.0.1:0")
        agent = node_agent(endpoint_of(conductor), TOKEN, heartbeat)
        await group.start(hello_only_conductor(hello), conductor)
        await group.start(slow_driver(discovery), driver)
        await agent.drivers.register(Kind.GPU, endpoint_of(driver))
        heartbeats = asyncio.create_task(agent.heartbeat.run_forever())
        try:
            async with asyncio.timeout(3 * heartbeat):
                await two_hellos.wait()
        finally:
            heartbeats.cancel()
            with suppress(asyncio.CancelledError):
                await heartbeats
            await agent.aclose()
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
