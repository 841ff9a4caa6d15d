"""The hardware ETag an agent's hellos carry (internal version 1.5): fresh from a
discovery for each heartbeat; a retry after an unanswered hello reuses the last one
while it is younger than a heartbeat interval."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accel.agent.service import AgentService, AgentSettings
from accel.internal.client import InternalClient
from accel.internal.versions import VersionRange
from accel.sim.servers import ServerGroup
from accel.sockets import bind, endpoint_of

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
        settings = AgentSettings(
            name="node1",
            conductors=(conductor,),
            endpoint="127.0.0.1:7001",
            token=TOKEN,
            versions=VersionRange(),
            heartbeat_interval=HEARTBEAT,
        )
        agent = AgentService(settings)
        agent._client = InternalClient(TOKEN, VersionRange(), attempts=1)
        agent._conductor_client = InternalClient(TOKEN, VersionRange(), attempts=1)
        try:
            await group.start(Starlette(routes=[Route("/v1/hello", hello, methods=["POST"])]), sock)
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
