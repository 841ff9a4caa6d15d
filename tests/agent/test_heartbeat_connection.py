"""An agent's heartbeats reuse one connection to the conductor while it is younger
than two heartbeat intervals, and open a new one after: no handshake per heartbeat,
and no connection kept past what the conductor keeps."""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accel.agent.builtin_drivers import builtin_drivers
from accel.internal.schemas import Kind
from accel.internal.versions import NEWEST, VersionRange
from accel.sim.servers import ServerGroup
from accel.sockets import bind, endpoint_of
from tests.agent.nodes import hello_only_conductor, node_agent

TOKEN = "agent-heartbeat-connection-token-0123456789"
HEARTBEAT = 0.4  # the agent keeps its idle connection 0.8 s


def test_heartbeats_share_a_connection_while_it_is_young() -> None:
    ports: list[int] = []

    async def hello(request: Request) -> Response:
        ports.append(request.client.port if request.client else 0)
        return JSONResponse({"status": "registered", "known": True})

    async def scenario() -> None:
        group, sock = ServerGroup(), bind("127.0.0.1:0")
        agent = node_agent(endpoint_of(sock), TOKEN, HEARTBEAT)
        try:
            await group.start(hello_only_conductor(hello), sock)
            assert await agent.heartbeat.hello(fresh_etag=False)
            await asyncio.sleep(HEARTBEAT / 2)
            assert await agent.heartbeat.hello(fresh_etag=False)
            # Past two heartbeat intervals: the agent's keepalive, not its library's.
            await asyncio.sleep(4 * HEARTBEAT)
            assert await agent.heartbeat.hello(fresh_etag=False)
        finally:
            await agent.aclose()
            await group.stop()

    asyncio.run(scenario())
    first, second, third = ports
    assert second == first
    assert third != first


def test_discoveries_share_a_drivers_connection_while_it_is_young() -> None:
    """The drivers' connections follow the heartbeat too: each heartbeat asks every
    driver for a discovery, and uvicorn's five seconds closed them in between."""
    ports: list[int] = []

    async def discovery(request: Request) -> Response:
        ports.append(request.client.port if request.client else 0)
        return JSONResponse({"hardware": [], "generation": len(ports)}, headers={"ETag": '"e"'})

    async def scenario() -> None:
        group, sock = ServerGroup(), bind("127.0.0.1:0")
        driver = Starlette(routes=[Route("/v1/discovery", discovery, methods=["POST"])])
        agent = node_agent("127.0.0.1:9", TOKEN, HEARTBEAT)
        endpoint = endpoint_of(sock)
        agent.client.peer_spoke(endpoint, NEWEST)
        try:
            await group.start(driver, sock)
            await agent.client.discover_if_changed(endpoint, 1.0)
            await asyncio.sleep(HEARTBEAT / 2)
            await agent.client.discover_if_changed(endpoint, 1.0)
            # Past two heartbeat intervals: the agent's keepalive, not a fixed one.
            await asyncio.sleep(4 * HEARTBEAT)
            await agent.client.discover_if_changed(endpoint, 1.0)
        finally:
            await agent.aclose()
            await group.stop()

    asyncio.run(scenario())
    first, second, third = ports
    assert second == first
    assert third != first


def test_a_built_in_driver_keeps_an_idle_connection_three_heartbeats(tmp_path: Path) -> None:
    with bind("127.0.0.1:0") as agent_socket:
        served = builtin_drivers(
            [Kind.GPU],
            tmp_path,
            agent_socket,
            "node1",
            TOKEN,
            VersionRange(),
            None,
            heartbeat_interval=7.0,
        )
    for each in served:
        each.sock.close()
    assert [each.keep_alive for each in served] == [21.0]
