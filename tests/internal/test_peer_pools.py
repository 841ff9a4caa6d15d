"""PeerPools: a pool per peer, each request served by its own peer's connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from accel.internal.client import InternalClient
from accel.internal.peer_pools import PeerPools
from accel.internal.versions import VersionRange
from accel.sim.servers import ServerGroup
from accel.sockets import bind, endpoint_of


def peer_app(name: str) -> Starlette:
    async def who(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{name} via {request.client.port if request.client else 0}")

    async def slow(request: Request) -> PlainTextResponse:
        await asyncio.sleep(0.5)  # a long poll
        return PlainTextResponse(f"{name} slowly")

    return Starlette(routes=[Route("/", who), Route("/slow", slow)])


@asynccontextmanager
async def serving_peers(count: int) -> AsyncIterator[list[str]]:
    """``count`` peers on loopback ports, their base URLs, stopped on leaving."""
    group = ServerGroup()
    endpoints = []
    try:
        for index in range(count):
            sock = bind("127.0.0.1:0")
            await group.start(peer_app(f"peer{index}"), sock)
            endpoints.append(f"http://{endpoint_of(sock)}/")
        yield endpoints
    finally:
        await group.stop()


def test_each_peer_is_answered_over_its_own_kept_alive_connection() -> None:
    async def scenario() -> None:
        pools = PeerPools(httpx.create_ssl_context())
        async with serving_peers(3) as peers:
            async with httpx.AsyncClient(transport=pools) as client:
                first = [(await client.get(peer)).text for peer in peers]
                again = [(await client.get(peer)).text for peer in peers]
                assert len(pools) == 3
            assert [text.split(" ")[0] for text in first] == ["peer0", "peer1", "peer2"]
            # Same client port the second time: the connection was kept and reused.
            assert again == first
            assert len(pools) == 0  # closed with the client

    asyncio.run(scenario())


def test_least_recently_used_peers_are_let_go_past_the_limit() -> None:
    async def scenario() -> None:
        pools = PeerPools(httpx.create_ssl_context(), max_peers=2)
        async with serving_peers(3) as peers, httpx.AsyncClient(transport=pools) as client:
            for peer in peers:
                assert (await client.get(peer)).status_code == 200
            assert len(pools) == 2
            # The evicted peer is reached again, over a new connection.
            assert (await client.get(peers[0])).text.startswith("peer0")
            assert len(pools) == 2

    asyncio.run(scenario())


def test_the_internal_client_keeps_one_pool_per_peer() -> None:
    async def scenario() -> None:
        async with serving_peers(2) as peers:
            client = InternalClient("token", VersionRange())
            try:
                for peer in peers * 2:
                    await client._http.get(peer)
                transport = client._http._transport
                assert isinstance(transport, PeerPools)
                assert len(transport) == 2
            finally:
                await client.aclose()

    asyncio.run(scenario())


def test_idle_pools_are_closed_but_never_one_with_a_request_in_flight() -> None:
    async def scenario() -> None:
        pools = PeerPools(httpx.create_ssl_context(), idle_seconds=0.0)
        async with serving_peers(3) as peers, httpx.AsyncClient(transport=pools) as client:
            polling = asyncio.ensure_future(client.get(peers[0] + "slow"))
            await asyncio.sleep(0.1)  # the long poll is in flight
            assert (await client.get(peers[1])).status_code == 200
            assert (await client.get(peers[2])).status_code == 200
            # peer1's pool was idle and is gone; peer0's is still serving its poll.
            assert len(pools) == 2
            assert (await polling).text == "peer0 slowly"
            assert (await client.get(peers[1])).status_code == 200
            assert len(pools) == 1  # only the pool just used is left

    asyncio.run(scenario())


def test_requests_finishing_together_close_each_idle_pool_once() -> None:
    # Each finished request closes idle pools, awaiting each close: another request
    # finishing meanwhile must not close (or look up) the same pool again.
    async def scenario() -> None:
        pools = PeerPools(httpx.create_ssl_context(), idle_seconds=1.0)
        async with serving_peers(12) as peers, httpx.AsyncClient(transport=pools) as client:
            idle, busy = peers[:8], peers[8:]
            for peer in idle:
                assert (await client.get(peer)).status_code == 200
            await asyncio.sleep(1.2)  # the first eight pools are idle now
            answers = await asyncio.gather(*(client.get(peer) for peer in busy))
            assert [answer.status_code for answer in answers] == [200] * len(busy)
            assert len(pools) == len(busy)

    asyncio.run(scenario())
