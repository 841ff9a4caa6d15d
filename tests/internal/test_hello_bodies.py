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


def bodies_received_at(
    versions: list[str], newest: str | None = None
) -> tuple[list[dict[str, Any]], tuple[int, int]]:
    """The bodies a conductor naming ``newest`` in its answers receives when the
    client speaks each of ``versions``, and the version the client speaks after."""
    received: list[dict[str, Any]] = []
    spoken_after: list[tuple[int, int]] = []

    async def hello(request: Request) -> Response:
        received.append(await request.json())
        return JSONResponse({"status": "registered", "known": True, "max_version": newest})

    async def scenario() -> None:
        group, client = ServerGroup(), InternalClient(TOKEN, VersionRange())
        sock = bind("127.0.0.1:0")
        conductor = endpoint_of(sock)
        try:
            await group.start(Starlette(routes=[Route("/v1/hello", hello, methods=["POST"])]), sock)
            for version in versions:
                # As if the client had learned this conductor's version.
                client.peer_versions.remember(base_url(conductor), parse_version(version))
                await client.agent_hello(conductor, HELLO)
            spoken_after.append(client.peer_version(conductor))
        finally:
            await client.aclose()
            await group.stop()

    asyncio.run(scenario())
    return received, spoken_after[0]


def test_the_inventory_etag_is_sent_from_1_5_only() -> None:
    (at_1_5, at_1_4, at_1_0), _ = bodies_received_at(["1.5", "1.4", "1.0"])
    assert at_1_5["inventory_etag"] == '"e"' and at_1_5["resync"] is True
    assert "inventory_etag" not in at_1_4 and at_1_4["name"] == "node1"
    assert at_1_0 == {"status": "READY", "endpoint": "127.0.0.1:7001"}


def test_a_conductor_upgraded_since_it_was_met_is_spoken_to_at_its_new_version() -> None:
    _, spoken = bodies_received_at(["1.4"], newest="1.5")
    assert spoken == (1, 5)
    _, spoken = bodies_received_at(["1.4"], newest="not a version")
    assert spoken == (1, 4)
    _, spoken = bodies_received_at(["1.4"], newest=None)  # a conductor before 1.5
    assert spoken == (1, 4)
