"""The conductor's HTTP service and its loops: hellos in; syncs, liveness sweeps out.

Every sync asks an agent to discover, waits for that discovery, and writes the
difference into the database. A failed or garbled discovery changes nothing in the
inventory and is retried sooner than the normal resync interval.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from accel.conductor import agents, allocation
from accel.conductor.presence import record_conductor
from accel.conductor.reconcile import store_inventory
from accel.db.engine import migrate, session_factory
from accel.db.models import utcnow
from accel.errors import PeerError, VersionNotAcceptable
from accel.internal.client import InternalClient
from accel.internal.origin import Network, check_origin
from accel.internal.rate_limit import RateLimiter
from accel.internal.schemas import AgentHello, ArqChanges, ArqOutcomes, HardwareList
from accel.internal.server import internal_app, only_query, read_body, request_version
from accel.internal.tls import TlsFiles
from accel.internal.versions import VersionRange, format_version
from accel.metrics import AGENTS, DISCOVERIES, HELLOS, INVENTORY_CHANGES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConductorSettings:
    name: str
    endpoint: str
    token: str
    versions: VersionRange
    heartbeat_interval: float = 10.0
    agent_down_after: float = 30.0
    resync_interval: float = 60.0
    discovery_timeout: float = 30.0
    sync_retry_after: float = 5.0
    max_concurrent_syncs: int = 32
    allowed_agent_networks: tuple[Network, ...] = ()
    hello_rate: float = 100.0
    hello_burst: int = 1000
    max_agents: int = 100_000
    tls: TlsFiles | None = None


class ConductorService:
    def __init__(self, settings: ConductorSettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = session_factory(engine)
        self.in_flight: set[str] = set()
        self.wake = asyncio.Event()
        self._client: InternalClient | None = None
        self._syncs: set[asyncio.Task[None]] = set()
        self.hello_limiter = RateLimiter(settings.hello_rate, settings.hello_burst)

    @property
    def client(self) -> InternalClient:
        assert self._client is not None, "the conductor's client exists while it serves"
        return self._client

    async def hello(self, request: Request) -> Response:
        source = request.client.host if request.client else None
        self.hello_limiter.check(source or "unknown")
        only_query(request)
        hello = await read_body(request, AgentHello)
        await check_origin(hello.endpoint, source, self.settings.allowed_agent_networks)
        name = hello.name or hello.endpoint
        outcome = await anyio.to_thread.run_sync(
            agents.record_hello,
            self.sessions,
            name,
            hello.endpoint,
            format_version(request_version(request)),
            utcnow(),
            hello.resync,
            self.settings.max_agents,
        )
        HELLOS.labels("conductor", "known" if outcome.known else "new").inc()
        if not outcome.known:
            log.info("agent %s registered at %s", name, hello.endpoint)
        if outcome.sync_now:
            self.wake.set()
        return JSONResponse({"status": "registered", "known": outcome.known})

    async def change_arqs(self, request: Request) -> Response:
        """Binds and unbinds accelerator requests for the api (internal version 1.2)."""
        if request_version(request) < (1, 2):
            raise VersionNotAcceptable(
                "binding needs internal version 1.2", self.settings.versions.supported()
            )
        only_query(request)
        changes = await read_body(request, ArqChanges)
        outcomes = await anyio.to_thread.run_sync(
            allocation.apply_changes, self.sessions, changes, utcnow()
        )
        return JSONResponse(ArqOutcomes(arqs=outcomes).model_dump(mode="json"))

    async def sync_forever(self) -> None:
        semaphore = asyncio.Semaphore(self.settings.max_concurrent_syncs)
        while True:
            due = await anyio.to_thread.run_sync(
                agents.agents_due_for_sync,
                self.sessions,
                utcnow(),
                self.settings.max_concurrent_syncs * 4,
            )
            for target in due:
                if target.name not in self.in_flight:
                    self.in_flight.add(target.name)
                    task = asyncio.create_task(self.sync_agent(target, semaphore))
                    self._syncs.add(task)
                    task.add_done_callback(self._syncs.discard)
            self.wake.clear()
            with suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.wake.wait()

    async def sync_agent(self, target: agents.SyncTarget, semaphore: asyncio.Semaphore) -> None:
        started = utcnow()
        try:
            async with semaphore:
                started = utcnow()
                report = await self._discover(target)
                now = utcnow()
                # A driver that failed may have hardware we could not see: look again soon.
                partial = any(d.state != "ok" for d in report.drivers or [])
                wait = self.settings.sync_retry_after if partial else self.settings.resync_interval
                next_sync = now + dt.timedelta(seconds=wait)
                diff = await anyio.to_thread.run_sync(
                    store_inventory, self.sessions, target.name, report, started, now, next_sync
                )
                log.info("synced agent %s: %s", target.name, diff)
                DISCOVERIES.labels("conductor", "ok").inc()
                for change in ("added", "changed", "returned", "vanished"):
                    INVENTORY_CHANGES.labels(change).inc(len(getattr(diff, change)))
        except (PeerError, TimeoutError) as exc:
            reason = str(exc) or "discovery timed out"
            log.warning("sync of agent %s failed, inventory kept: %s", target.name, reason)
            DISCOVERIES.labels("conductor", "failed").inc()
            retry_at = utcnow() + dt.timedelta(seconds=self.settings.sync_retry_after)
            await anyio.to_thread.run_sync(
                agents.record_sync_failure, self.sessions, target.name, reason, started, retry_at
            )
        finally:
            self.in_flight.discard(target.name)

    async def _discover(self, target: agents.SyncTarget) -> HardwareList:
        timeout = self.settings.discovery_timeout
        async with asyncio.timeout(timeout):
            started = await self.client.start_discovery(target.endpoint)
            if started.generation is None:
                return await self.client.hardware(target.endpoint)
            report = await self.client.hardware(target.endpoint, started.generation, timeout)
            if (report.generation or 0) < started.generation:
                raise PeerError(target.endpoint, "discovery did not complete")
            return report

    async def sweep_forever(self) -> None:
        interval = max(0.2, min(1.0, self.settings.agent_down_after / 4))
        while True:
            down = await anyio.to_thread.run_sync(
                agents.mark_silent_agents_down,
                self.sessions,
                utcnow(),
                self.settings.agent_down_after,
            )
            for name in down:
                log.warning(
                    "agent %s is DOWN: no heartbeat for %gs", name, self.settings.agent_down_after
                )
            await asyncio.sleep(interval)

    async def announce_forever(self) -> None:
        """Keeps this conductor's record fresh so the api can find a live one."""
        while True:
            counts = await anyio.to_thread.run_sync(agents.count_by_state, self.sessions)
            for state in ("UP", "DOWN"):
                AGENTS.labels(state).set(counts.get(state, 0))
            await anyio.to_thread.run_sync(
                record_conductor,
                self.sessions,
                self.settings.name,
                self.settings.endpoint,
                utcnow(),
            )
            await asyncio.sleep(self.settings.heartbeat_interval)

    def app(self) -> ASGIApp:
        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            await anyio.to_thread.run_sync(migrate, self.engine)
            self._client = InternalClient(
                self.settings.token,
                self.settings.versions,
                timeout=self.settings.discovery_timeout,
                max_connections=1000,
                tls=self.settings.tls,
            )
            loops = [
                asyncio.create_task(loop(), name=loop.__name__)
                for loop in (self.sync_forever, self.sweep_forever, self.announce_forever)
            ]
            try:
                yield
            finally:
                for task in [*loops, *self._syncs]:
                    task.cancel()
                for task in [*loops, *self._syncs]:
                    with suppress(asyncio.CancelledError):
                        await task
                await self._client.aclose()
                self.engine.dispose()

        routes = [
            Route("/v1/hello", self.hello, methods=["POST"]),
            Route("/v1/accelerator_requests", self.change_arqs, methods=["POST"]),
        ]
        return internal_app(
            "conductor",
            routes,
            self.settings.token,
            self.settings.versions,
            lifespan,
            extra_root={"name": self.settings.name},
        )
