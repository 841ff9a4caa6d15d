"""The driver's HTTP service: discovery on request, the last result, hello to the agent.

``POST /v1/discovery`` starts a scan in a worker thread and answers 202 at once; a
second POST while one runs joins it. ``GET /v1/hardware`` answers the last completed
scan; a caller that started one may wait for it with ``min_generation`` and ``wait``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from accel.driver.discovery import Discoverer
from accel.errors import PeerError
from accel.internal.client import InternalClient
from accel.internal.discovery_http import (
    MAX_WAIT_SECONDS,
    discovery_started,
    hardware_response,
    requested_result,
)
from accel.internal.discovery_state import DiscoveryState
from accel.internal.schemas import DriverHello, HardwareEntry, Kind
from accel.internal.server import internal_app
from accel.internal.tls import TlsFiles
from accel.internal.versions import VersionRange
from accel.metrics import DISCOVERIES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriverSettings:
    discoverer: Discoverer
    agent: str
    endpoint: str
    token: str
    versions: VersionRange
    node: str | None = None
    hello_interval: float = 10.0
    timeout: float = 5.0
    tls: TlsFiles | None = None

    @property
    def kind(self) -> Kind:
        return self.discoverer.kind


class DriverService:
    """One driver process: its discoveries and its standing with the agent."""

    def __init__(self, settings: DriverSettings) -> None:
        self.settings = settings
        self.node = settings.node or socket.gethostname()
        self.discoveries: DiscoveryState[list[HardwareEntry]] = DiscoveryState([])
        self.registered = asyncio.Event()

    async def _scan(self) -> list[HardwareEntry]:
        entries = await anyio.to_thread.run_sync(self.settings.discoverer.discover, self.node)
        DISCOVERIES.labels("driver", "ok").inc()
        return entries

    async def start_discovery(self, request: Request) -> Response:
        return discovery_started(request, self.discoveries.start(self._scan))

    async def hardware(self, request: Request) -> Response:
        version, generation, entries = await requested_result(request, self.discoveries)
        return hardware_response(version, generation, entries)

    async def hello_forever(self, client: InternalClient) -> None:
        """Says hello at start, retrying with backoff, then again every interval.

        The periodic hello re-registers the driver with an agent that restarted and
        forgot it; hellos are idempotent, so a known driver costs the agent nothing.
        """
        hello = DriverHello(
            status="READY", endpoint=self.settings.endpoint, type=self.settings.kind
        )
        backoff = 0.2
        while True:
            try:
                answer = await client.driver_hello(self.settings.agent, hello)
            except PeerError as exc:
                log.warning("hello to agent failed, retrying in %.1fs: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.hello_interval)
                continue
            if answer.node and not self.settings.node and answer.node != self.node:
                log.info("agent names this node %s", answer.node)
                self.node = answer.node
            if not answer.known:
                log.info(
                    "registered with agent %s as %s", self.settings.agent, self.settings.endpoint
                )
            self.registered.set()
            backoff = 0.2
            await asyncio.sleep(self.settings.hello_interval)

    def app(self) -> ASGIApp:
        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            client = InternalClient(
                self.settings.token,
                self.settings.versions,
                timeout=self.settings.timeout,
                tls=self.settings.tls,
            )
            # Discover once before saying hello, so that even a caller that cannot
            # wait for a discovery (internal API 1.0) never sees an empty first answer.
            first = self.discoveries.start(self._scan)
            await self.discoveries.wait_for(first, MAX_WAIT_SECONDS)
            hello = asyncio.create_task(self.hello_forever(client), name="hello")
            try:
                yield
            finally:
                hello.cancel()
                with suppress(asyncio.CancelledError):
                    await hello
                await self.discoveries.close()
                await client.aclose()

        routes = [
            Route("/v1/discovery", self.start_discovery, methods=["POST"]),
            Route("/v1/hardware", self.hardware, methods=["GET"]),
        ]
        return internal_app(
            "driver",
            routes,
            self.settings.token,
            self.settings.versions,
            lifespan,
            extra_root={"kind": self.settings.kind.value},
        )
