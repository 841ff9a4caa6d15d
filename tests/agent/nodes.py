"""What the agent's tests share: a conductor that only takes hellos, the agent of one
node that says hello to it, and a clock that moves only when told."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from accel.agent.heartbeat import Clock
from accel.agent.service import AgentService, AgentSettings
from accel.internal.versions import VersionRange


def hello_only_conductor(hello: Callable[[Request], Awaitable[Response]]) -> Starlette:
    return Starlette(routes=[Route("/v1/hello", hello, methods=["POST"])])


def node_agent(
    conductor: str, token: str, heartbeat: float, clock: Clock = time.monotonic
) -> AgentService:
    """node1's agent, reporting to ``conductor`` every ``heartbeat`` seconds."""
    return AgentService(
        AgentSettings(
            name="node1",
            conductors=(conductor,),
            endpoint="127.0.0.1:7001",
            token=token,
            versions=VersionRange(),
            heartbeat_interval=heartbeat,
        ),
        clock,
    )


class StoppedClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
