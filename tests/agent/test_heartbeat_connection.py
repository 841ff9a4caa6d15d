"""An agent's heartbeats reuse one connection to the conductor while it is younger
than two heartbeat intervals, and open a new one after: no handshake per heartbeat,
and no connection kept past what the conductor keeps."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

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
