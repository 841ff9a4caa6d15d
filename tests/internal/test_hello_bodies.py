"""What an agent's hello body holds at each internal version it may be sent at."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accel.internal.client import InternalClient, base_url
from accel.internal.schemas import AgentHello
from accel.internal.versions import VersionRange, parse_version
from accel.sim.servers import ServerGroup
from accel.sockets import bind, endpoint_of

TOKEN = "hello-bodies-test-token-0123456789"
HELLO = AgentHello(
    status="READY", endpoint="127.0.0.1:7001", name="node1", resync=True, inventory_etag='"e"'
)


def bodies_received_at(versions: list[str]) -> list[dict[str, Any]]:
    """The bodies a conductor receives when the client speaks each of ``versions``."""
    received: list[dict[str, Any]] = []

    async def hello(request: Request) -> Response:
        received.append(await request.json())
        return JSONResponse({"status": "registered", "known": True})

    async def scenario() -> None:
        group, client = ServerGroup(), InternalClient(TOKEN, VersionRange())
        sock = bind("127.0.0.1:0")
        conductor = endpoint_of(sock)
        try:
            await group.start(Starlette(routes=[Route("/v1/hello", hello, methods=["POST"])]), sock)
            for version in versions:
                # As if the client had learned this conductor's version.
                client._peer_versions[base_url(conductor)] = parse_version(version)
                await client.agent_hello(conductor, HELLO)
        finally:
            await client.aclose()
            await group.stop()

    asyncio.run(scenario())
    return received


def test_the_inventory_etag_is_sent_from_1_5_only() -> None:
    at_1_5, at_1_4, at_1_0 = bodies_received_at(["1.5", "1.4", "1.0"])
    assert at_1_5["inventory_etag"] == '"e"' and at_1_5["resync"] is True
    assert "inventory_etag" not in at_1_4 and at_1_4["name"] == "node1"
    assert at_1_0 == {"status": "READY", "endpoint": "127.0.0.1:7001"}
