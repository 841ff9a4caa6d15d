"""The driver's HTTP service: discovery on request, the last result, hello to the agent,
and setup of the hardware it discovered.

``POST /v1/discovery`` starts a scan in a worker thread and answers 202 at once; a
second POST while one runs joins it. ``GET /v1/hardware`` answers the last completed
scan; a caller that started one may wait for it with ``min_generation`` and ``wait``.

``POST /v1/setup`` (internal version 1.3) checks a setup call at once (400 when it
cannot be done here, 404 for a device this driver does not discover, 409 while
another operation works on the device) and runs it in the background, answering 202
with its progress; ``GET /v1/setup/{operation}`` answers where it stands.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from uuid import UUID

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from accel.driver.change_watch import FULL_SCAN_AFTER, ChangeWatch, watch_tree
from accel.driver.discovery import Discoverer
from accel.driver.health.gpu import HealthNvml
from accel.driver.health.monitor import HEALTH_INTERVAL, HealthMonitor, poll_forever
from accel.driver.health.policy import HealthPolicy
from accel.driver.scan_thread import run_in_daemon_thread
from accel.driver.setup import OperationRegistry, SetupConfig, plan_setup
from accel.driver.shared_scan import note_change
from accel.errors import PeerError
from accel.internal.client import InternalClient
from accel.internal.discovery_http import (
    MAX_WAIT_SECONDS,
    Renderings,
    discovery_answer,
    hardware_response,
    requested_result,
)
from accel.internal.discovery_state import DiscoveryState
from accel.internal.gate import require
from accel.internal.intervals import HELLO_INTERVAL
from accel.internal.schemas import DriverHello, HardwareEntry, Kind
from accel.internal.server import internal_app, service_route
from accel.internal.setup_schemas import SetupCall, SetupProgress
from accel.internal.tls import TlsFiles
from accel.internal.versions import Feature, Version, VersionRange
from accel.metrics import DISCOVERIES
from accel.web.bodies import read_body
from accel.web.queries import only_params

log = logging.getLogger(__name__)

# How many of its agent's heartbeat intervals a driver keeps an idle connection. The
# agent asks every driver for a discovery at each heartbeat, and a connection closed
# in between (uvicorn's five seconds) made each heartbeat a new TCP connection per
# driver, both ends of it in one process for a built-in driver (docs/benchmarks.md,
# issue 25). The agent keeps its end two intervals, so it lets a connection go first.
KEPT_HEARTBEATS = 3


@dataclass(frozen=True)
class DriverSettings:
    discoverer: Discoverer
    agent: str
    endpoint: str
    token: str
    versions: VersionRange
    node: str | None = None
    hello_interval: float = HELLO_INTERVAL
    timeout: float = 5.0
    tls: TlsFiles | None = None
    setup: SetupConfig = field(default_factory=SetupConfig)
    # None: no health checks (the simulator, whose thousands of drivers share one
    # process and one template tree); entries then carry no health.
    health_interval: float | None = HEALTH_INTERVAL
    health_policy: HealthPolicy = field(default_factory=HealthPolicy)
    # What tells the driver its tree changed, made from its sysfs root; None: the
    # process's watch of that root, shared with its other drivers (``watch_tree``).
    change_watch: Callable[[Path], ChangeWatch] | None = None

    @property
    def kind(self) -> Kind:
        return self.discoverer.kind


class DriverService:
    """One driver process: its discoveries and its standing with the agent."""

    def __init__(self, settings: DriverSettings) -> None:
        self.settings = settings
        self.node = settings.node or socket.gethostname()
        self.discoveries: DiscoveryState[list[HardwareEntry]] = DiscoveryState([])
        self.renderings = Renderings()
        self.registered = asyncio.Event()
        self.operations = OperationRegistry(self._rediscover)
        discoverer = settings.discoverer
        self.health = None
        if settings.health_interval is not None:
            self.health = HealthMonitor(
                discoverer.kind,
                discoverer.sysfs_root,
                settings.health_policy,
                # pynvml itself, where present, has the health calls as well.
                cast(HealthNvml | None, discoverer.nvml),
            )
        self.watch = self._watch_of(discoverer.sysfs_root)
        self._scanned: _Scan | None = None
        self._must_scan = False

    def _watch_of(self, sysfs_root: Path) -> ChangeWatch:
        return (self.settings.change_watch or watch_tree)(sysfs_root)

    def _discover(self) -> list[HardwareEntry]:
        entries = self._entries()
        return entries if self.health is None else self.health.attach(entries)

    def _entries(self) -> list[HardwareEntry]:
        """The last scan's entries if nothing could have changed since (no change seen
        in the tree, no setup action, young enough, the same node name and tree); else
        a new scan's."""
        discoverer = self.settings.discoverer
        if self.watch.root != discoverer.sysfs_root:  # the simulator moved it to another
            self.watch = self._watch_of(discoverer.sysfs_root)
        # Looked at before the scan: what comes while it runs asks for the next one.
        changes = self.watch.look()
        now = time.monotonic()
        last, must, self._must_scan = self._scanned, self._must_scan, False
        if (
            self.watch.sees
            and last is not None
            and not must
            and last.changes == changes
            and now - last.at < FULL_SCAN_AFTER
            and last.node == self.node
            and last.discoverer is discoverer
        ):
            return last.entries
        entries = discoverer.discover(self.node)
        self._scanned = _Scan(now, changes, self.node, discoverer, entries)
        return entries

    async def _scan(self) -> list[HardwareEntry]:
        entries = await run_in_daemon_thread(self._discover)
        DISCOVERIES.labels("driver", "ok").inc()
        return entries

    def _health_changed(self) -> None:
        """A fresh report, so the agent's next heartbeat carries a new ETag."""
        self.discoveries.start(self._scan, join=False)

    async def start_discovery(self, request: Request) -> Response:
        return await discovery_answer(
            request,
            self.discoveries,
            lambda: self.discoveries.start(self._scan),
            functools.partial(self._answer, request),
        )

    async def hardware(self, request: Request) -> Response:
        return self._answer(request, *await requested_result(request, self.discoveries))

    def _answer(
        self, request: Request, version: Version, generation: int, entries: list[HardwareEntry]
    ) -> Response:
        return hardware_response(
            version,
            generation,
            entries,
            None,
            request.headers.get("if-none-match"),
            self.renderings,
        )

    async def _rediscover(self) -> None:
        """A fresh scan after setup changed the hardware, awaited so it is seen at once.

        Not joined with a scan already running: that one may have read the old state.
        """
        note_change()  # nor with another driver's reading of the tree (shared_scan)
        self._must_scan = True
        generation = self.discoveries.start(self._scan, join=False)
        await self.discoveries.wait_for(generation, MAX_WAIT_SECONDS)

    async def start_setup(self, request: Request) -> Response:
        require(request, Feature.SETUP, "setup", self.settings.versions)
        only_params(request)
        call = await read_body(request, SetupCall)
        progress = self.operations.known(call)
        if progress is None:
            if not call.dry_run:
                # Before planning, which would read a device mid-change.
                self.operations.check_free(call.address)
            plan = await anyio.to_thread.run_sync(
                plan_setup,
                call,
                self.settings.discoverer,
                self.settings.setup,
                self.discoveries.result,
            )
            progress = self.operations.start(call, plan)
        return _progress_response(progress, 202)

    async def setup_progress(self, request: Request) -> Response:
        require(request, Feature.SETUP, "setup", self.settings.versions)
        only_params(request)
        operation: UUID = request.path_params["operation"]
        return _progress_response(self.operations.progress(operation), 200)

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
                shared=True,  # its agent is its node's: the process's session
            )
            # Discover once before saying hello, so that even a caller that cannot
            # wait for a discovery (internal API 1.0) never sees an empty first answer.
            first = self.discoveries.start(self._scan)
            await self.discoveries.wait_for(first, MAX_WAIT_SECONDS)
            tasks = [asyncio.create_task(self.hello_forever(client), name="hello")]
            if self.health is not None and self.settings.health_interval is not None:
                poll = poll_forever(
                    self.health,
                    self.settings.health_interval,
                    lambda: self.discoveries.result,
                    self._health_changed,
                )
                tasks.append(asyncio.create_task(poll, name="health"))
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                    with suppress(asyncio.CancelledError):
                        await task
                await self.operations.close()
                await self.discoveries.close()
                await client.aclose()

        return internal_app(
            "driver",
            ROUTES,
            self.settings.token,
            self.settings.versions,
            lifespan,
            extra_root={"kind": self.settings.kind.value},
            service=self,
        )


# Built once per process, for every driver in it (internal_app's ``service``).
ROUTES = (
    service_route("/v1/discovery", DriverService.start_discovery, methods=["POST"]),
    service_route("/v1/hardware", DriverService.hardware, methods=["GET"]),
    service_route("/v1/setup", DriverService.start_setup, methods=["POST"]),
    service_route("/v1/setup/{operation:uuid}", DriverService.setup_progress, methods=["GET"]),
)


@dataclass(frozen=True, slots=True)
class _Scan:
    """A driver's last scan: when, at which count of its tree's changes, of what."""

    at: float
    changes: int
    node: str
    discoverer: Discoverer
    entries: list[HardwareEntry]


def _progress_response(progress: SetupProgress, status: int) -> Response:
    return JSONResponse(progress.model_dump(mode="json"), status_code=status)
