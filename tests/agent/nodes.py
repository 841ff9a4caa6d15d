"""What the agent's tests share: a conductor that only takes hellos, and the agent of
one node that says hello to it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from accel.agent.service import AgentService, AgentSettings
from accel.internal.versions import VersionRange


def hello_only_conductor(hello: Callable[[Request], Awaitable[Response]]) -> Starlette:
    return Starlette(routes=[Route("/v1/hello", hello, methods=["POST"])])


def node_agent(conductor: str, token: str, heartbeat: float) -> AgentService:
    """node1's agent, reporting to ``conductor`` every ``heartbeat`` seconds."""
    return AgentService(
        AgentSettings(
            name="node1",
            conductors=(conductor,),
            endpoint="127.0.0.1:7001",
            token=token,
            versions=VersionRange(),
            heartbeat_interval=heartbeat,
        )
    )
