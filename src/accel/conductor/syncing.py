"""The conductor's sync loop: claim due agents' sync leases, run the syncs, renew.

Every sync asks an agent to discover, waits for that discovery, and writes the
difference into the database. A failed or garbled discovery changes nothing in the
inventory. When each agent is synced next is ``sync_schedule``'s.

Several conductors share one database: each sync runs under a lease (see
``leases``), so each agent is synced by one conductor at a time and a dead
conductor's agents are taken over when its leases expire. A conductor claims only as
many agents as it has free sync slots, so no conductor hoards work it cannot start.
A database that is down for a while (a PostgreSQL restart) costs rounds, not the loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor import agents, leases
from accel.conductor.device_diff import InventoryDiff
from accel.conductor.reconcile import FinishedSync, store_inventories
from accel.conductor.sync_schedule import hellos_carry_etags
from accel.db.columns import utcnow
from accel.db.group_commit import GroupCommit, fleet_linger
from accel.db.outage import DATABASE_AWAY
from accel.errors import PeerError
from accel.internal.client import Discovery, InternalClient
from accel.internal.schemas import MAX_ENTRIES_PER_DRIVER
from accel.metrics import DISCOVERIES, INVENTORY_CHANGES, SYNC_LEASES

if TYPE_CHECKING:
    from accel.conductor.service import ConductorSettings

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

# How often an idle conductor looks for due agents when no hello woke it.
POLL_SECONDS = 1.0
# Reported entries stored in one transaction (more only for one node alone, at most
# MAX_ENTRIES_PER_NODE): a fleet's first syncs of ten-odd devices each still go 256
# to a transaction, and one huge report does not ride along with them.
MAX_ENTRIES_PER_TRANSACTION = 4 * MAX_ENTRIES_PER_DRIVER


class SyncLoop:
    def __init__(
        self,
        settings: ConductorSettings,
        sessions: sessionmaker[Session],
        client: Callable[[], InternalClient],
        wake: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.schedule = settings.schedule
        self.sessions = sessions
        self.client = client
        self.wake = wake
        self.owner = settings.name
        self.running: dict[str, asyncio.Task[None]] = {}
        # Whether the last claim took as many agents as there were free slots: more
        # may be due, waiting for a slot.
        self.slots_full = False
        # Syncs whose discovery is done, handed to the writer. They hold no slot (a
        # slot bounds the agents called at once), and no renewal cancels them: their
        # lease is checked, and given back, in the write itself.
        self.storing: set[asyncio.Task[Any]] = set()
        # Finished discoveries are stored many agents to a transaction.
        self.store: GroupCommit[FinishedSync, InventoryDiff] = GroupCommit(
            "inventory",
            lambda syncs: store_inventories(sessions, syncs, settings.health_brake),
            linger=fleet_linger(settings.schedule.heartbeat),
            weight=_entries,
            max_weight=MAX_ENTRIES_PER_TRANSACTION,
        )

    @property
    def lease_seconds(self) -> float:
        return self.settings.sync_lease or 3 * self.schedule.heartbeat

    async def run(self) -> None:
        """Claims and starts syncs until cancelled."""
        released = await self._database(leases.release_all, self.sessions, self.owner)
        if released:
            log.info("gave back %d sync leases an earlier run of %s held", released, self.owner)
        while True:
            # Cleared before the claim: a hello or a finished sync meanwhile claims again.
            self.wake.clear()
            free = self.settings.max_concurrent_syncs - len(self.running)
            claims = await self._database(
                leases.claim_due_agents,
                self.sessions,
                self.owner,
                utcnow(),
                self.lease_seconds,
                free,
            )
            for claim in claims or []:
                self._start(claim)
            self.slots_full = claims is not None and len(claims) >= free
            with suppress(TimeoutError):
                async with asyncio.timeout(POLL_SECONDS):
                    await self.wake.wait()

    def _start(self, claim: leases.Claim) -> None:
        SYNC_LEASES.labels("claimed").inc()
        if claim.taken_from is not None:
            SYNC_LEASES.labels("taken_over").inc()
            log.warning(
                "took over the sync of agent %s: the lease of conductor %s expired",
                claim.name,
                claim.taken_from,
            )
        task = asyncio.create_task(self.sync_agent(claim), name=f"sync {claim.name}")
        self.running[claim.name] = task

    async def renew_forever(self) -> None:
        """Renews the leases of running syncs; a sync whose lease is gone is dropped."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            running = dict(self.running)
            held = await self._database(
                leases.renew_leases,
                self.sessions,
                self.owner,
                list(running),
                utcnow(),
                self.lease_seconds,
            )
            if held is None:
                continue  # the database is away: the write at the end will check again
            for name, task in running.items():
                if name in held:
                    continue
                if self.running.get(name) is task and not task.done():
                    log.warning("lost the sync lease of agent %s; dropping its sync", name)
                    SYNC_LEASES.labels("lost").inc()
                    task.cancel()

    async def stop(self) -> None:
        """Cancels running syncs and gives their leases back for others to take now."""
        tasks = [*self.running.values(), *self.storing]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        await self.store.aclose()
        with suppress(SQLAlchemyError):
            await anyio.to_thread.run_sync(leases.release_all, self.sessions, self.owner)

    async def sync_agent(self, claim: leases.Claim) -> None:
        started = utcnow()
        this_task = asyncio.current_task()
        assert this_task is not None, "a sync runs as its own task"
        try:
            found = await self._discover(claim)
            now = utcnow()
            complete = found.report is None or found.report.complete
            confirmable = found.etag is not None and hellos_carry_etags(claim.internal_version)
            next_sync_at = self.schedule.after_sync(now, complete, confirmable)
            self._leave_slot(claim.name, this_task)
            self.storing.add(this_task)
            diff = await self.store.submit(
                FinishedSync(
                    claim.name,
                    found.report,
                    started,
                    now,
                    next_sync_at,
                    self.owner,
                    found.etag,
                )
            )
            log.info("synced agent %s: %s", claim.name, diff)
            DISCOVERIES.labels("conductor", "ok" if found.report else "unchanged").inc()
            for change in ("added", "changed", "returned", "vanished"):
                INVENTORY_CHANGES.labels(change).inc(len(getattr(diff, change)))
        except (PeerError, TimeoutError) as exc:
            reason = str(exc) or "discovery timed out"
            log.warning("sync of agent %s failed, inventory kept: %s", claim.name, reason)
            await self._record_failure(claim, reason, started)
        except leases.LeaseLost as exc:
            SYNC_LEASES.labels("lost").inc()
            log.warning("sync of agent %s dropped, nothing written: %s", claim.name, exc)
        except DATABASE_AWAY as exc:
            # The lease expires unrenewed and the sync is tried again, here or elsewhere.
            log.warning("sync of agent %s not written, database error: %s", claim.name, exc)
        except Exception:  # what this agent sent could not be stored
            # The details (SQL and its parameters) go to the log, never to the stored
            # error that /v2/agents shows.
            log.exception("sync of agent %s could not be stored", claim.name)
            reason = "the conductor could not store this node's report (its log says why)"
            await self._record_failure(claim, reason, started)
        finally:
            self.storing.discard(this_task)
            self._leave_slot(claim.name, this_task)

    def _leave_slot(self, name: str, task: asyncio.Task[None]) -> None:
        if self.running.get(name) is not task:
            return
        del self.running[name]
        # A slot is free: if agents were left waiting for one (a fleet coming up),
        # they are claimed now rather than at the next poll. If not, a claim now
        # would find nothing: syncs come due by a hello's wake or the poll.
        if self.slots_full:
            self.wake.set()

    async def _record_failure(self, claim: leases.Claim, reason: str, started: dt.datetime) -> None:
        """Keeps the inventory, gives the lease back, and tries again soon."""
        DISCOVERIES.labels("conductor", "failed").inc()
        retry_at = self.schedule.after_failure(utcnow())
        with suppress(leases.LeaseLost):
            await self._database(
                agents.record_sync_failure,
                self.sessions,
                claim.name,
                reason,
                started,
                retry_at,
                self.owner,
            )

    async def _discover(self, claim: leases.Claim) -> Discovery:
        timeout = self.settings.discovery_timeout
        async with asyncio.timeout(timeout):
            return await self.client().discover_if_changed(
                claim.endpoint, timeout, claim.inventory_etag
            )

    async def _database(self, call: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R | None:
        """Runs a database call in a thread; None (logged) if the database failed."""
        try:
            return await anyio.to_thread.run_sync(lambda: call(*args, **kwargs))
        except SQLAlchemyError as exc:
            log.warning("database error in %s, left for the next round: %s", call.__name__, exc)
            return None


def _entries(sync: FinishedSync) -> int:
    return 1 + (len(sync.report.hardware) if sync.report is not None else 0)
