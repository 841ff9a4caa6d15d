"""The agent's HTTP service: drivers register here, conductors discover through here.

``POST /v1/discovery`` fans out to every registered driver at once; each driver costs
at most its timeout, and a failed one is reported as failed in the answer's
``drivers`` (never silently missing), so a conductor does not take its hardware for
vanished. Heartbeats go to the first conductor that answers, in the order given.
From internal version 1.5 each heartbeat carries the ETag of the node's hardware,
from a discovery run (or joined) just before it: the conductor syncs the node only
when that differs from what it stored, and the node, not the conductor, pays for
noticing that nothing changed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from accel.agent.drivers import DriverRegistry, RegisteredDriver
from accel.agent.setup_relay import SetupRelay
from accel.errors import PeerError
from accel.internal.client import InternalClient
from accel.internal.discovery_http import (
    discovery_answer,
    hardware_etag,
    hardware_response,
    requested_result,
)
from accel.internal.discovery_state import DiscoveryState
from accel.internal.intervals import DRIVER_TIMEOUT, HEARTBEAT_INTERVAL
from accel.internal.origin import Network, check_origin
from accel.internal.rate_limit import RateLimiter
from accel.internal.schemas import (
    MAX_ATTACHABLE_PER_DRIVER,
    MAX_DRIVER_ANSWER_BYTES,
    MAX_ENTRIES_PER_DRIVER,
    MAX_REASON_LENGTH,
    AgentHello,
    DriverHello,
    DriverOutcome,
    HardwareEntry,
    HardwareList,
)
from accel.internal.server import internal_app, only_query, read_body, request_version
from accel.internal.tls import TlsFiles
from accel.internal.versions import HELLO_ETAG_VERSION, Version, VersionRange, format_version
from accel.metrics import DISCOVERIES, HELLOS

log = logging.getLogger(__name__)


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


def hello_pause(heartbeat_interval: float, failures: int) -> float:
    """Seconds until the next hello after ``failures`` unanswered rounds in a row.

    Unanswered hellos are retried soon, then less and less often (up to the
    heartbeat interval), each agent at a random point of its window: a fleet whose
    conductors were away must not come back all at once, every second, and keep
    them overloaded (5,000 simulated agents did exactly that).
    """
    if failures == 0:
        return heartbeat_interval
    window = min(heartbeat_interval, 0.5 * 2 ** min(failures, 16))
    return random.uniform(window / 2, window)


class AgentService:
    """One node's agent: its drivers, its discoveries, its heartbeat."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.drivers = DriverRegistry(lambda: self.client)
        self.discoveries: DiscoveryState[HardwareList] = DiscoveryState(
            HardwareList(hardware=[], drivers=[])
        )
        self.conductor_index = 0
        # Counted, not flagged: a registration while a hello is in flight must not be
        # cleared by that hello's answer (it asked for less than is wanted now).
        self.resyncs_wanted = 0
        self.resyncs_asked = 0
        self._discovered_registry_version = -1
        self.heartbeat_now = asyncio.Event()
        # When the last hello's ETag was computed, at which version, for which drivers
        # (the registry version its discovery saw), and what it was.
        self._recent_etag: tuple[float, Version, int, str] | None = None
        # A discovery that ended after its hello was sent: its ETag goes in a hello of
        # its own (``_hello_when_found``), so the conductor need not call to learn it.
        self._late_etag: asyncio.Task[None] | None = None
        self._late_etag_found = False
        self._client: InternalClient | None = None  # to the drivers
        self._conductor_client: InternalClient | None = None  # heartbeats
        # Drivers are few and local; a flood of hellos is not a driver.
        self.hello_limiter = RateLimiter(rate=10, burst=50)
        self.setup = SetupRelay(self.drivers.get, lambda: self.client, settings.versions)

    @property
    def client(self) -> InternalClient:
        assert self._client is not None, "the agent's client exists while it serves"
        return self._client

    @property
    def conductor_client(self) -> InternalClient:
        assert self._conductor_client is not None, "the agent's clients exist while it serves"
        return self._conductor_client

    async def hello(self, request: Request) -> Response:
        source = request.client.host if request.client else None
        self.hello_limiter.check(source or "unknown")
        only_query(request)
        hello = await read_body(request, DriverHello)
        await check_origin(hello.endpoint, source, self.settings.allowed_driver_networks)
        known = await self.drivers.register(hello.type, hello.endpoint)
        HELLOS.labels("agent", "known" if known else "new").inc()
        self.client.peer_spoke(hello.endpoint, request_version(request))
        if not known:
            # The node's inventory may have grown: ask the conductor for a sync now.
            self.resyncs_wanted += 1
            self.heartbeat_now.set()
        return JSONResponse(
            {
                "status": "registered",
                "known": known,
                "node": self.settings.name,
                "max_version": format_version(self.settings.versions.maximum),
            }
        )

    async def list_drivers(self, request: Request) -> Response:
        only_query(request)
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
        current = self._discovered_registry_version == self.drivers.version
        return await discovery_answer(
            request,
            self.discoveries,
            lambda: self.discoveries.start(self._discover_all, join=current),
            lambda version, generation, found: hardware_response(
                version,
                generation,
                found.hardware,
                found.drivers or [],
                request.headers.get("if-none-match"),
            ),
        )

    async def hardware(self, request: Request) -> Response:
        version, generation, found = await requested_result(request, self.discoveries)
        return hardware_response(
            version,
            generation,
            found.hardware,
            found.drivers or [],
            request.headers.get("if-none-match"),
        )

    async def _discover_all(self) -> HardwareList:
        self._discovered_registry_version = self.drivers.version
        drivers = self.drivers.all()
        results = await asyncio.gather(*(self._discover_one(driver) for driver in drivers))
        hardware: list[HardwareEntry] = []
        outcomes: list[DriverOutcome] = []
        for driver, (entries, error) in zip(drivers, results, strict=True):
            hardware.extend(entries)
            outcomes.append(
                DriverOutcome(
                    type=driver.kind,
                    endpoint=driver.endpoint,
                    state="ok" if error is None else "failed",
                    error=error,
                )
            )
        return HardwareList(hardware=hardware, drivers=outcomes)

    async def _discover_one(
        self, driver: RegisteredDriver
    ) -> tuple[list[HardwareEntry], str | None]:
        timeout = self.settings.driver_timeout
        try:
            async with asyncio.timeout(timeout):
                answer = await self.client.discover(driver.endpoint, wait=timeout)
        except (PeerError, TimeoutError) as exc:
            return self._failed(driver, str(exc) or f"no answer within {timeout:g}s")
        if len(answer.hardware) > MAX_ENTRIES_PER_DRIVER:
            # Refused whole, as a failed driver: the conductor keeps what it stored.
            return self._failed(
                driver,
                f"reported {len(answer.hardware)} hardware entries, more than the "
                f"{MAX_ENTRIES_PER_DRIVER} a driver may report",
            )
        attachable = sum(entry.attachable for entry in answer.hardware)
        if attachable > MAX_ATTACHABLE_PER_DRIVER:
            # As above: the node's report, all drivers together, stays within its bound.
            return self._failed(
                driver,
                f"reported hardware making {attachable} attach handles, more than the "
                f"{MAX_ATTACHABLE_PER_DRIVER} a driver may report",
            )
        DISCOVERIES.labels("agent", "ok").inc()
        entries = [h for h in answer.hardware if h.acc_specs.device_type == driver.kind]
        if len(entries) != len(answer.hardware):
            log.warning("driver %s reported hardware of other kinds; ignored", driver.kind)
        return entries, None

    def _failed(
        self, driver: RegisteredDriver, reason: str
    ) -> tuple[list[HardwareEntry], str | None]:
        log.warning("driver %s at %s failed: %s", driver.kind, driver.endpoint, reason)
        DISCOVERIES.labels("agent", "failed").inc()
        if len(reason) > MAX_REASON_LENGTH:
            reason = reason[: MAX_REASON_LENGTH - 3] + "..."
        return [], reason

    async def heartbeat_forever(self) -> None:
        """Says hello to a conductor now and every heartbeat interval, failing over."""
        failures = 0
        while True:
            self.heartbeat_now.clear()
            late, self._late_etag_found = self._late_etag_found, False
            # A retry after unanswered hellos, or the hello for a discovery that ended
            # late, runs no discovery of its own: it sends the ETag of this heartbeat
            # interval's, if there was one.
            answered = await self._hello_some_conductor(fresh_etag=failures == 0 and not late)
            failures = 0 if answered else failures + 1
            pause = hello_pause(self.settings.heartbeat_interval, failures)
            with suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self.heartbeat_now.wait()

    async def _hello_some_conductor(self, fresh_etag: bool = True) -> bool:
        wanted = self.resyncs_wanted
        resync = wanted > self.resyncs_asked
        conductors = self.settings.conductors
        etag = None
        if not resync and conductors:  # a resync asked for needs none
            etag = await self._inventory_etag(conductors[self.conductor_index], fresh_etag)
        hello = AgentHello(
            status="READY",
            endpoint=self.settings.endpoint,
            name=self.settings.name,
            resync=resync,
            inventory_etag=etag,
        )
        for offset in range(len(conductors)):
            index = (self.conductor_index + offset) % len(conductors)
            try:
                await self.conductor_client.agent_hello(conductors[index], hello)
            except PeerError as exc:
                log.warning("hello to conductor failed: %s", exc)
                continue
            if index != self.conductor_index:
                log.info("now reporting to conductor %s", conductors[index])
                self.conductor_index = index
            self.resyncs_asked = max(self.resyncs_asked, wanted)
            return True
        return False

    async def _inventory_etag(self, conductor: str, fresh: bool = True) -> str | None:
        """The ETag the conductor would get for this node's hardware now, or None: for a
        conductor older than 1.5, or a discovery not done within half the
        heartbeat interval (a hung driver must not hold the heartbeat up). Not
        ``fresh``: the last one, if it is less than a heartbeat interval old."""
        version = self.conductor_client.peer_version(conductor)
        if version < HELLO_ETAG_VERSION:
            return None
        if not fresh:
            recent = self._recent_etag
            if recent is None:
                return None
            computed, at_version, registry, etag = recent
            young = time.monotonic() - computed < self.settings.heartbeat_interval
            same = at_version == version and registry == self.drivers.version
            return etag if young and same else None
        current = self._discovered_registry_version == self.drivers.version
        generation = self.discoveries.start(self._discover_all, join=current)
        finished, found = await self.discoveries.wait_for(
            generation, self.settings.heartbeat_interval / 2
        )
        if finished < generation:
            self._hello_when_late(generation, version)
            return None
        return self._remember_etag(version, found)

    def _remember_etag(self, version: Version, found: HardwareList) -> str:
        etag = hardware_etag(version, found.hardware, found.drivers or [])
        self._recent_etag = (time.monotonic(), version, self._discovered_registry_version, etag)
        return etag

    def _hello_when_late(self, generation: int, version: Version) -> None:
        """Says hello again, with the ETag, once a discovery that overran its hello ends.

        Without it a node whose discovery is slow (a loaded host, a slow driver) never
        confirms its hardware in a hello, and the conductor calls it at every periodic
        resync: a discovery and a round trip, where a hello would have done. A
        discovery that has not ended within the interval is left to the
        next heartbeat, which joins it.
        """
        if self._late_etag is None or self._late_etag.done():
            self._late_etag = asyncio.create_task(
                self._hello_when_found(generation, version), name="late etag"
            )

    async def _hello_when_found(self, generation: int, version: Version) -> None:
        wait = self.settings.heartbeat_interval / 2
        finished, found = await self.discoveries.wait_for(generation, wait)
        if finished < generation:
            return
        self._remember_etag(version, found)
        self._late_etag_found = True
        self.heartbeat_now.set()

    def new_client(self, keepalive: float = 5.0) -> InternalClient:
        """A client for the drivers, or with ``keepalive``, for the conductors."""
        return InternalClient(
            self.settings.token,
            self.settings.versions,
            timeout=self.settings.driver_timeout,
            tls=self.settings.tls,
            keepalive=keepalive,
            report_bytes=MAX_DRIVER_ANSWER_BYTES,
        )

    def new_conductor_client(self) -> InternalClient:
        """The heartbeats' client: each heartbeat goes over the last one's connection.

        No new TCP (and TLS) handshake per heartbeat on either side: with mutual TLS
        the handshakes cost a conductor four times the CPU of the heartbeats
        themselves. A conductor keeps an idle connection three of its heartbeat
        intervals (accel conductor), longer than these two, so the agent lets it go
        first. The drivers' connections are not kept so long: a driver closes an
        idle one after five seconds, and a kept socket would only wait for that.
        """
        return self.new_client(keepalive=2 * self.settings.heartbeat_interval)

    def app(self) -> ASGIApp:
        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            self._client = self.new_client()
            self._conductor_client = self.new_conductor_client()
            heartbeat = asyncio.create_task(self.heartbeat_forever(), name="heartbeat")
            try:
                yield
            finally:
                for task in (heartbeat, self._late_etag):
                    if task is not None:
                        task.cancel()
                        with suppress(asyncio.CancelledError):
                            await task
                await self.discoveries.close()
                await self._client.aclose()
                await self._conductor_client.aclose()

        routes = [
            Route("/v1/hello", self.hello, methods=["POST"]),
            Route("/v1/drivers", self.list_drivers, methods=["GET"]),
            Route("/v1/discovery", self.start_discovery, methods=["POST"]),
            Route("/v1/hardware", self.hardware, methods=["GET"]),
            Route("/v1/setup", self.setup.start, methods=["POST"]),
            Route("/v1/setup/{operation}", self.setup.progress, methods=["GET"]),
        ]
        return internal_app(
            "agent",
            routes,
            self.settings.token,
            self.settings.versions,
            lifespan,
            extra_root={"name": self.settings.name},
        )
