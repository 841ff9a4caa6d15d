"""Asking an endpoint who answers there: a live agent answers as itself, and a port
where nothing listens answers as nobody."""

from __future__ import annotations

import asyncio

from accel.internal.client import InternalClient
from accel.internal.identity import answers_as
from accel.internal.versions import VersionRange
from tests.conductor.test_setup_runner import nowhere
from tests.processes import TOKEN, Cluster


def ask(endpoint: str, **facts: str) -> bool:
    async def run() -> bool:
        client = InternalClient(TOKEN, VersionRange(), timeout=2.0)
        try:
            return await answers_as(client, endpoint, **facts)
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_a_live_agent_answers_as_itself_and_as_nobody_else(cluster: Cluster) -> None:
    agent = cluster.agent([f"http://{nowhere()}"], "node1")
    assert ask(agent.endpoint, component="agent", name="node1")
    assert ask(agent.endpoint)  # no facts asked: anyone who answers
    assert not ask(agent.endpoint, component="agent", name="node2")
    assert not ask(agent.endpoint, component="conductor", name="node1")


def test_a_port_where_nothing_listens_answers_as_nobody() -> None:
    assert not ask(nowhere(), component="agent", name="node1")
    assert not ask(nowhere())
