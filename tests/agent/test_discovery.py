"""An agent's answer for its node (agent/discovery.py)."""

from __future__ import annotations

import asyncio

from accel.agent.discovery import NodeDiscovery, NodeReport
from accel.agent.drivers import DriverRegistry
from accel.internal.client import InternalClient
from accel.internal.versions import VersionRange


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
