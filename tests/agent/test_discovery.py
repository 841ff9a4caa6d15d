"""An agent's answer for its node (agent/discovery.py)."""

from __future__ import annotations

import asyncio
from uuid import UUID

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accel.agent.discovery import NodeDiscovery, NodeReport
from accel.agent.drivers import DriverRegistry
from accel.internal.client import InternalClient
from accel.internal.schemas import AccSpecs, AccStatus, HardwareEntry, Kind
from accel.internal.versions import NEWEST, VersionRange
from accel.sim.servers import ServerGroup
from accel.sockets import bind, endpoint_of


def answer(resource_provider_name: str | None) -> NodeReport:
    async def discover() -> NodeReport:
        client = InternalClient(token="t", versions=VersionRange())
        discovery = NodeDiscovery(
            DriverRegistry(lambda: client), client, 1.0, resource_provider_name
        )
        try:
            _, found = await discovery.wait_for(discovery.start(), 5.0)
        finally:
            await discovery.aclose()
            await client.aclose()
        return found

    return asyncio.run(discover())


def test_the_answer_names_placements_root_for_the_node_only_when_told() -> None:
    assert answer("node1.example.org").resource_provider_name == "node1.example.org"
    assert answer(None).resource_provider_name is None


GPU = HardwareEntry(
    uuid=UUID(int=1),
    acc_specs=AccSpecs(remote=0, num=1, device_type=Kind.GPU, acc_capability={}),
    acc_status=AccStatus(setup_required=False, reboot_required=False),
)


def test_a_discovery_where_every_driver_is_unchanged_answers_the_last_result() -> None:
    """Every driver answering 304, as on an idle node, gives the very result of the
    last discovery (whose ETag the agent has already made); one changed driver, or
    one that failed, gives a new one."""
    etags = ['"a"', '"a"', '"b"']

    async def driver_discovery(request: Request) -> Response:
        etag = etags.pop(0) if etags else None
        if etag is None:
            return JSONResponse({"error": "gone"}, status_code=500)
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        hardware = [GPU.wire(NEWEST)] if etag == '"b"' else []
        return JSONResponse({"hardware": hardware, "generation": 1}, headers={"ETag": etag})

    async def scenario() -> list[NodeReport]:
        group, sock = ServerGroup(), bind("127.0.0.1:0")
        client = InternalClient(token="t", versions=VersionRange(), attempts=1)
        registry = DriverRegistry(lambda: client)
        discovery = NodeDiscovery(registry, client, 2.0)
        endpoint = endpoint_of(sock)
        client.peer_spoke(endpoint, NEWEST)
        found = []
        try:
            await group.start(
                Starlette(routes=[Route("/v1/discovery", driver_discovery, methods=["POST"])]), sock
            )
            await registry.register(Kind.GPU, endpoint)
            for _ in range(4):
                found.append((await discovery.wait_for(discovery.start(), 5.0))[1])
        finally:
            await discovery.aclose()
            await client.aclose()
            await group.stop()
        return found

    first, unchanged, changed, failed = asyncio.run(scenario())
    assert unchanged is first
    assert str(GPU.uuid) in changed.hardware.text_at(NEWEST)
    assert str(GPU.uuid) not in first.hardware.text_at(NEWEST)
    assert failed.drivers and failed.drivers[0].state == "failed"
