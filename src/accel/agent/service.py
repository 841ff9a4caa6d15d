"""The agent's HTTP service: drivers register here, conductors discover through here.

``POST /v1/discovery`` asks every registered driver at once (``NodeDiscovery``); the
heartbeat to the conductors and the inventory ETag its hellos carry are the
``ConductorHeartbeat``'s. This class wires them to the routes and to each other.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from accel.agent.discovery import NodeDiscovery, NodeReport
from accel.agent.drivers import DriverRegistry
from accel.agent.heartbeat import Clock, ConductorHeartbeat
from accel.agent.setup_relay import SetupRelay
from accel.internal.client import InternalClient
from accel.internal.discovery_http import discovery_answer, hardware_response, requested_result
from accel.internal.gate import request_version
from accel.internal.intervals import DRIVER_TIMEOUT, HEARTBEAT_INTERVAL
from accel.internal.origin import Network, check_origin
from accel.internal.rate_limit import RateLimiter
from accel.internal.schemas import MAX_DRIVER_ANSWER_BYTES, DriverHello
from accel.internal.server import internal_app, service_route
from accel.internal.tls import TlsFiles
from accel.internal.versions import Version, VersionRange, format_version
from accel.metrics import HELLOS
from accel.web.bodies import read_body
from accel.web.queries import only_params


@dataclass(frozen=True)
class AgentSettings:
    name: str
    conductors: tuple[str, ...]
    endpoint: str
    token: str
    versions: VersionRange
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    driver_timeout: float = DRIVER_TIMEOUT
    allowed_driver_networks: tuple[Network, ...] = ()
    tls: TlsFiles | None = None
    # Placement's name for this node's compute-node provider; None: the node's name.
    resource_provider_name: str | None = None


class AgentService:
    """One node's agent: its drivers' HTTP routes, and the parts that do its work."""

    def __init__(self, settings: AgentSettings, clock: Clock = time.monotonic) -> None:
        """``clock``: what the heartbeat ages its inventory ETags by."""
        self.settings = settings
        self.client = _client(settings)  # to the drivers
        self.drivers = DriverRegistry(lambda: self.client)
        self.discovery = NodeDiscovery(
            self.drivers, self.client, settings.driver_timeout, settings.resource_provider_name
        )
        self.heartbeat = ConductorHeartbeat(
            name=settings.name,
            endpoint=settings.endpoint,
            conductors=settings.conductors,
            interval=settings.heartbeat_interval,
            client=_conductor_client(settings),
            discovery=self.discovery,
            clock=clock,
        )
        # Drivers are few and local; a flood of hellos is not a driver.
        self.hello_limiter = RateLimiter(rate=10, burst=50)
        self.setup = SetupRelay(self.drivers.get, lambda: self.client, settings.versions)

    async def hello(self, request: Request) -> Response:
        source = request.client.host if request.client else None
        self.hello_limiter.check(source or "unknown")
        only_params(request)
        hello = await read_body(request, DriverHello)
        await check_origin(hello.endpoint, source, self.settings.allowed_driver_networks)
        known = await self.drivers.register(hello.type, hello.endpoint)
        HELLOS.labels("agent", "known" if known else "new").inc()
        self.client.peer_spoke(hello.endpoint, request_version(request))
        if not known:
            # Discover now, not only when the conductor asks after the hello below: a
            # node's answer is complete a round trip sooner (docs/benchmarks.md, 25).
            self.discovery.start()
            self.heartbeat.ask_resync()
        return JSONResponse(
            {
                "status": "registered",
                "known": known,
                "node": self.settings.name,
                "max_version": format_version(self.settings.versions.maximum),
            }
        )

    async def list_drivers(self, request: Request) -> Response:
        only_params(request)
        return JSONResponse(
            {
                "drivers": [
                    {
                        "type": d.kind.value,
                        "endpoint": d.endpoint,
                        "registered_at": d.registered_at,
                        "last_hello": d.last_hello,
                    }
                    for d in self.drivers.all()
                ]
            }
        )

    async def start_discovery(self, request: Request) -> Response:
        return await discovery_answer(
            request,
            self.discovery.state,
            self.discovery.start,
            functools.partial(self._answer, request),
        )

    async def hardware(self, request: Request) -> Response:
        return self._answer(request, *await requested_result(request, self.discovery.state))

    def _answer(
        self, request: Request, version: Version, generation: int, found: NodeReport
    ) -> Response:
        return hardware_response(
            version,
            generation,
            found.hardware,
            found.drivers,
            request.headers.get("if-none-match"),
            self.discovery.renderings,
            found.resource_provider_name,
        )

    async def aclose(self) -> None:
        """Ends a late hello and a running discovery, and closes the agent's connections."""
        await self.heartbeat.aclose()
        await self.discovery.aclose()
        await self.client.aclose()

    def app(self) -> ASGIApp:
        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            heartbeat = asyncio.create_task(self.heartbeat.run_forever(), name="heartbeat")
            try:
                yield
            finally:
                heartbeat.cancel()
                with suppress(asyncio.CancelledError):
                    await heartbeat
                await self.aclose()

        return internal_app(
            "agent",
            ROUTES,
            self.settings.token,
            self.settings.versions,
            lifespan,
            extra_root={"name": self.settings.name},
            service=self,
        )

    async def start_setup(self, request: Request) -> Response:
        return await self.setup.start(request)

    async def setup_progress(self, request: Request) -> Response:
        return await self.setup.progress(request)


# Built once per process, for every agent in it (internal_app's ``service``).
ROUTES = (
    service_route("/v1/hello", AgentService.hello, methods=["POST"]),
    service_route("/v1/drivers", AgentService.list_drivers, methods=["GET"]),
    service_route("/v1/discovery", AgentService.start_discovery, methods=["POST"]),
    service_route("/v1/hardware", AgentService.hardware, methods=["GET"]),
    service_route("/v1/setup", AgentService.start_setup, methods=["POST"]),
    service_route("/v1/setup/{operation}", AgentService.setup_progress, methods=["GET"]),
)


def _client(settings: AgentSettings, shared: bool = True) -> InternalClient:
    """A client for the drivers (sharing its process's session: they are this node's),
    or, not ``shared``, for the conductors: each heartbeat goes over the last one's
    connection.

    No new TCP (and TLS) handshake per heartbeat on either side: with mutual TLS
    the handshakes cost a conductor four times the CPU of the heartbeats
    themselves, and a new connection to each driver at every heartbeat was a large
    share of an idle node's CPU (docs/benchmarks.md, issue 25). A conductor keeps an
    idle connection three of its heartbeat intervals (accel conductor), and so does
    a driver (``KEPT_HEARTBEATS``), longer than these two, so the agent lets it go
    first.
    """
    return InternalClient(
        settings.token,
        settings.versions,
        timeout=settings.driver_timeout,
        tls=settings.tls,
        keepalive=2 * settings.heartbeat_interval,
        report_bytes=MAX_DRIVER_ANSWER_BYTES,
        shared=shared,
    )


def _conductor_client(settings: AgentSettings) -> InternalClient:
    """The heartbeats' client, apart from the drivers' (its own session and connections)."""
    return _client(settings, shared=False)
