"""The conductor's HTTP service and its loops: hellos in; syncs, liveness sweeps out.

Syncs run under leases shared by every conductor on the database (``syncing``,
``leases``). Each loop outlives a database that is away for a while: a round that
fails is logged and the next one tries again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio.to_thread
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from accel.conductor import agents, allocation
from accel.conductor.health import HealthBrake
from accel.conductor.hearing import Hearing
from accel.conductor.name_guard import NameGuard
from accel.conductor.nova_events import NovaNotifier, NovaSettings, keystoneauth_post
from accel.conductor.placement.settings import PlacementSettings
from accel.conductor.presence import live_holder, record_conductor
from accel.conductor.setup_runner import SetupRunner, SetupSettings
from accel.conductor.sync_schedule import SyncSchedule
from accel.conductor.syncing import SyncLoop
from accel.db.columns import utcnow
from accel.db.commit_deadline import TooLate, parse_commit_before
from accel.db.engine import migrate, session_factory
from accel.db.group_commit import GroupCommit, fleet_linger
from accel.db.outage import DATABASE_AWAY
from accel.errors import InvalidInput, Unavailable
from accel.internal.arq_schemas import ArqChanges, ArqOutcomes
from accel.internal.client import InternalClient
from accel.internal.error_body import INTERNAL_ERRORS
from accel.internal.gate import request_version, require
from accel.internal.identity import answers_as
from accel.internal.origin import Network, check_origin
from accel.internal.rate_limit import RateLimiter
from accel.internal.schemas import COMMIT_BEFORE, AgentHello
from accel.internal.server import internal_app
from accel.internal.tls import TlsFiles
from accel.internal.versions import Feature, VersionRange, format_version
from accel.metrics import AGENTS, HELLOS, show_openstack_calls
from accel.states import AgentState
from accel.web.bodies import read_body
from accel.web.queries import only_params

if TYPE_CHECKING:
    # keystoneauth1 is imported only by a conductor that talks to OpenStack.
    from accel.conductor.placement.loop import PlacementLoop
    from accel.openstack.credentials import OpenStackCredentials

log = logging.getLogger(__name__)


class NameTaken(RuntimeError):
    """Another live conductor holds this conductor's ``--name``: it must not start."""


# Seconds between looks for binds an older release left unfinished (and one at start).
ABANDONED_BINDS_EVERY = 10.0
HELLOS_BY_OUTCOME = {
    True: HELLOS.labels("conductor", "known"),
    False: HELLOS.labels("conductor", "new"),
}


@functools.cache
def _hello_answer(known: bool, newest: str) -> bytes:
    """A hello's answer, rendered once: every heartbeat gets one of these two."""
    answer = {"status": "registered", "known": known, "max_version": newest}
    return json.dumps(answer, separators=(",", ":")).encode()


# The internal API's error bodies; a database that is away answers 503.
CONDUCTOR_ERRORS = dataclasses.replace(INTERNAL_ERRORS, outage=DATABASE_AWAY)


@dataclass(frozen=True)
class ConductorSettings:
    name: str
    endpoint: str
    token: str
    versions: VersionRange
    # The intervals that agents' heartbeats and syncs keep.
    schedule: SyncSchedule = dataclasses.field(default_factory=SyncSchedule)
    discovery_timeout: float = 30.0
    max_concurrent_syncs: int = 32
    allowed_agent_networks: tuple[Network, ...] = ()
    hello_rate: float = 100.0
    hello_burst: int = 1000
    max_agents: int = 100_000
    tls: TlsFiles | None = None
    # Seconds a sync lease lasts unrenewed; None: three heartbeat intervals.
    sync_lease: float | None = None
    # How to reach OpenStack's services (Placement, Nova); None: accel talks to none.
    openstack: OpenStackCredentials | None = None
    # Nova's external events after binds (--nova-url); needs ``openstack``.
    nova: NovaSettings | None = None
    # Reporting to Placement (needs ``openstack``): its URL, "" for Keystone's catalog;
    # None: no reporting.
    placement_url: str | None = None
    placement: PlacementSettings = dataclasses.field(default_factory=PlacementSettings)
    health_brake: HealthBrake = dataclasses.field(default_factory=HealthBrake)


class ConductorService:
    def __init__(self, settings: ConductorSettings, engine: Engine) -> None:
        self.settings = settings
        show_openstack_calls()
        schedule = settings.schedule
        self.engine = engine
        self.sessions = session_factory(engine)
        self.wake = asyncio.Event()
        self.syncs = SyncLoop(settings, self.sessions, lambda: self.client, self.wake)
        self._client: InternalClient | None = None
        self.setup = SetupRunner(
            self.sessions,
            lambda: self.client,
            SetupSettings(conductor=settings.name, versions=settings.versions),
        )
        self.hearing = Hearing(schedule.down_after)
        self.nova: NovaNotifier | None = None
        if settings.nova is not None:
            if settings.openstack is None:
                raise ValueError("Nova's events need OpenStack credentials")
            post = keystoneauth_post(settings.openstack, settings.nova)
            self.nova = NovaNotifier(self.sessions, post, settings.nova)
        self.hello_limiter = RateLimiter(settings.hello_rate, settings.hello_burst)
        self.names = NameGuard(self.sessions, lambda: self.client, schedule.down_after)
        # Heartbeats are many and tiny: recorded many agents to a transaction.
        self.hellos: GroupCommit[agents.Hello, agents.HelloOutcome] = GroupCommit(
            "hellos",
            lambda batch: agents.record_hellos(
                self.sessions,
                batch,
                settings.max_agents,
                schedule,
                live_for=schedule.down_after,
            ),
            linger=fleet_linger(schedule.heartbeat),
        )

    @property
    def client(self) -> InternalClient:
        assert self._client is not None, "the conductor's client exists while it serves"
        return self._client

    async def hello(self, request: Request) -> Response:
        source = request.client.host if request.client else None
        self.hello_limiter.check(source or "unknown")
        only_params(request)
        hello = await read_body(request, AgentHello)
        version = request_version(request)
        if hello.inventory_etag is not None and not Feature.HELLO_ETAG.spoken_in(version):
            # As a release before 1.5 would: the field is not part of this version.
            raise InvalidInput(
                "inventory_etag is a field of internal version "
                f"{format_version(Feature.HELLO_ETAG.since)} and later, "
                f"not {format_version(version)}"
            )
        await check_origin(hello.endpoint, source, self.settings.allowed_agent_networks)
        name = hello.name or hello.endpoint
        record = agents.Hello(
            name,
            hello.endpoint,
            format_version(version),
            utcnow(),
            hello.resync,
            hello.inventory_etag,
        )
        try:
            try:
                outcome = await self.hellos.submit(record)
            except agents.NameHeld as held:
                await self.names.check(held, hello.endpoint)  # Conflict if it is live
                outcome = await self.hellos.submit(dataclasses.replace(record, may_move=True))
        except DATABASE_AWAY as exc:  # the agent tries again
            log.warning("hello of agent %s not recorded: %s", name, exc)
            self.hearing.restart()  # and no agent's silence counts until it is back
            raise Unavailable("the conductor's database is unavailable") from exc
        HELLOS_BY_OUTCOME[outcome.known].inc()
        self.client.peer_spoke(hello.endpoint, version)
        if not outcome.known:
            log.info("agent %s registered at %s", name, hello.endpoint)
        if outcome.sync_now:
            self.wake.set()
        return Response(
            _hello_answer(outcome.known, format_version(self.settings.versions.maximum)),
            media_type="application/json",
        )

    async def change_arqs(self, request: Request) -> Response:
        """Binds and unbinds accelerator requests for the api (internal version 1.2)."""
        require(request, Feature.BINDING, "binding", self.settings.versions)
        only_params(request)
        changes = await read_body(request, ArqChanges)
        commit_before = parse_commit_before(request.headers.get(COMMIT_BEFORE))
        try:
            outcomes = await anyio.to_thread.run_sync(
                allocation.apply_changes,
                self.sessions,
                changes,
                utcnow(),
                commit_before,
                self.nova is not None,
            )
        except TooLate as exc:
            raise Unavailable(f"{exc}; nothing was changed") from exc
        if self.nova is not None and changes.bind:
            self.nova.wake()
        return JSONResponse(ArqOutcomes(arqs=outcomes).model_dump(mode="json"))

    async def sync_forever(self) -> None:
        await self.syncs.run()

    async def sweep_forever(self) -> None:
        # A tenth of the grace, between 0.2 and 5 s: an agent goes DOWN at most that
        # long after its grace ends. Sweeping every second scanned a fleet's rows 30
        # times per heartbeat interval for nothing, a cost an idle conductor's profile showed.
        down_after = self.settings.schedule.down_after
        interval = max(0.2, min(5.0, down_after / 10))
        binds_swept = -math.inf
        self.hearing.restart()  # the grace runs from here: before, no hello was heard
        while True:
            if time.monotonic() - binds_swept >= ABANDONED_BINDS_EVERY:
                binds_swept = time.monotonic()
                await self._fail_abandoned_binds()
            down = await self._sweep_once()
            for name in down:
                log.warning("agent %s is DOWN: no heartbeat for %gs", name, down_after)
            await self.names.clear_quiet()
            planned = self.hearing.now() + interval
            await asyncio.sleep(interval)
            self.hearing.woke(planned)

    async def _sweep_once(self) -> list[str]:
        if not self.hearing.may_judge():
            return []
        # The hellos still waiting to be written count as heard: the database tells
        # the truth only up to the oldest of them.
        now = utcnow()
        waiting = self.hellos.oldest_waiting()
        if waiting is not None:
            now -= dt.timedelta(seconds=max(0.0, time.monotonic() - waiting))
        try:
            return await anyio.to_thread.run_sync(
                agents.mark_silent_agents_down,
                self.sessions,
                now,
                self.settings.schedule.down_after,
            )
        except SQLAlchemyError as exc:
            log.warning("liveness sweep skipped, database error: %s", exc)
            if isinstance(exc, DATABASE_AWAY):  # away: hellos fail too
                self.hearing.restart()
            return []

    async def _fail_abandoned_binds(self) -> None:
        try:
            failed = await anyio.to_thread.run_sync(
                allocation.fail_abandoned_binds,
                self.sessions,
                utcnow(),
                allocation.ABANDONED_BIND_GRACE,
            )
        except SQLAlchemyError as exc:
            log.warning("abandoned binds not looked for, database error: %s", exc)
            return
        for arq_uuid in failed:
            log.warning("accelerator request %s: a bind left unfinished is failed", arq_uuid)

    async def _refuse_a_held_name(self) -> None:
        """Refuses to start under the name of a conductor that is alive elsewhere."""
        name = self.settings.name
        holder = await anyio.to_thread.run_sync(
            live_holder, self.sessions, name, self.settings.endpoint, utcnow()
        )
        if holder is None or not await answers_as(
            self.client, holder, component="conductor", name=name
        ):
            return  # no record alive elsewhere, or its process is gone: this is it again
        message = (
            f"conductor name {name} is held by the live conductor at {holder}; "
            "give this conductor another --name"
        )
        log.error("%s", message)
        raise NameTaken(message)

    async def announce_forever(self) -> None:
        """Keeps this conductor's record fresh so the api can find a live one."""
        interval = self.settings.schedule.heartbeat
        started = True
        while True:
            now = utcnow()
            try:
                counts = await anyio.to_thread.run_sync(agents.count_by_state, self.sessions)
                for state in AgentState:
                    AGENTS.labels(state).set(counts.get(state, 0))
                await anyio.to_thread.run_sync(
                    record_conductor,
                    self.sessions,
                    self.settings.name,
                    self.settings.endpoint,
                    now,
                    now + dt.timedelta(seconds=max(3 * interval, self.syncs.lease_seconds)),
                    started,
                )
                started = False
            except SQLAlchemyError as exc:
                log.warning("could not record this conductor's presence: %s", exc)
            await asyncio.sleep(interval)

    def _placement_loop(self) -> PlacementLoop | None:
        settings = self.settings
        if settings.placement_url is None or settings.openstack is None:
            return None
        # Imported here: keystoneauth1 is loaded only by a conductor reporting to Placement.
        from accel.conductor.placement.loop import placement_loop

        return placement_loop(
            self.sessions,
            settings.name,
            settings.openstack,
            settings.placement_url or None,
            settings.placement,
        )

    def app(self) -> ASGIApp:
        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            await anyio.to_thread.run_sync(migrate, self.engine)
            self._client = InternalClient(
                self.settings.token,
                self.settings.versions,
                timeout=self.settings.discovery_timeout,
                tls=self.settings.tls,
            )
            await self._refuse_a_held_name()
            placement = self._placement_loop()
            loops = [
                asyncio.create_task(loop(), name=loop.__name__)
                for loop in (
                    self.sync_forever,
                    self.syncs.renew_forever,
                    self.sweep_forever,
                    self.announce_forever,
                    self.setup.drive_forever,
                    *([self.nova.run_forever] if self.nova is not None else []),
                    *((placement.run,) if placement else ()),
                )
            ]
            try:
                yield
            finally:
                for task in loops:
                    task.cancel()
                for task in loops:
                    with suppress(asyncio.CancelledError):
                        await task
                await self.syncs.stop()  # others may take this conductor's agents now
                if placement is not None:
                    await placement.stop()
                await self.hellos.aclose()
                await self._client.aclose()
                self.engine.dispose()

        routes = [
            Route("/v1/hello", self.hello, methods=["POST"]),
            Route("/v1/accelerator_requests", self.change_arqs, methods=["POST"]),
            Route("/v1/operations", self.setup.accept, methods=["POST"]),
        ]
        return internal_app(
            "conductor",
            routes,
            self.settings.token,
            self.settings.versions,
            lifespan,
            extra_root={"name": self.settings.name},
            direct=("/v1/hello",),  # every agent's heartbeat
            errors=CONDUCTOR_ERRORS,
        )
