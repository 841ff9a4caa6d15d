"""The conductor's Placement loop: notices what changed, reports it, retries failures.

Each round reads two cheap things: the inventory generation (devices, deployables,
attributes) and the agents' states and provider names. When either moved, the
trees are computed again and the nodes whose tree differs from the one last
reported become pending (``state.note_trees``); nothing else costs a Placement call.
Then the loop claims the nodes that are due (pending, or not checked for drift for
``check_interval``) and reconciles each in a worker thread, ``concurrency`` at a
time (``--placement-concurrency``), each report on its own: a slow node holds one slot,
never the others (``run``). Several reports at once is what a Placement with several
workers needs to be fast (docs/benchmarks.md): each call waits on Placement, not on
the conductor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
import math
import time
from contextlib import suppress
from dataclasses import dataclass

import anyio
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.placement import state
from accel.conductor.placement.client import PlacementClient, PlacementError
from accel.conductor.placement.reconcile import Outcome, reconcile_node
from accel.conductor.placement.settings import PlacementSettings
from accel.conductor.placement.tree import NodeTree, desired_trees
from accel.db.columns import utcnow
from accel.db.generation import read_generation
from accel.db.models import Agent
from accel.metrics import PLACEMENT_PENDING
from accel.openstack.bounded_http import calls_until
from accel.openstack.credentials import OpenStackCredentials, make_adapter, make_session
from accel.thread_calls import ThreadCalls

log = logging.getLogger(__name__)

# A report makes calls for this share of its lease only. Another conductor takes the
# node over once the lease has ended by its own clock: a report held past it (a hung
# call, a paused process) must not then write over the newer tree the other reported
# (docs/openstack.md, "Faults"). The rest covers clocks that disagree a little.
REPORT_SHARE = 0.9


@dataclass
class PlacementLoop:
    sessions: sessionmaker[Session]
    client: PlacementClient
    owner: str
    settings: PlacementSettings = dataclasses.field(default_factory=PlacementSettings)
    _signature: tuple[int, str] | None = None
    _trees: dict[str, NodeTree] = dataclasses.field(default_factory=dict)
    # The reports ``run`` has going, by node: each holds one of ``concurrency`` slots.
    running: dict[str, asyncio.Task[None]] = dataclasses.field(default_factory=dict)
    # Set when a report ends and frees its slot (made by ``run``, in its event loop).
    _freed: asyncio.Event = dataclasses.field(init=False, repr=False)
    _noticed_at: float = -math.inf
    _threads: ThreadCalls = dataclasses.field(default_factory=ThreadCalls, init=False, repr=False)

    async def run(self) -> None:
        """Reports due nodes, ``concurrency`` at a time, until cancelled.

        Each report runs on its own, so a slow or failing node holds its slot only:
        the loop claims as many nodes as there are free slots, and claims again as
        soon as one is freed (a claim never waits for a slot, so its lease runs only
        while its report does)."""
        self._freed = asyncio.Event()
        try:
            while True:
                self._freed.clear()
                free = self.settings.concurrency - len(self.running)
                started = 0
                try:
                    started = await self._start_due(free)
                except (SQLAlchemyError, OSError) as exc:
                    log.warning("placement round failed, trying again: %s", exc)
                except Exception:
                    # Reporting must outlive a bug in one round: the next round starts
                    # over from the database.
                    log.exception("placement round failed, trying again")
                if started and started == free:
                    # Every slot is taken and more may be due: claim when one is freed.
                    await self._freed.wait()
                elif not started:
                    with suppress(TimeoutError):
                        async with asyncio.timeout(self.settings.tick):
                            await self._freed.wait()
        finally:
            reports = list(self.running.values())
            for task in reports:
                task.cancel()
            await asyncio.gather(*reports, return_exceptions=True)
            # A worker thread cannot be stopped: the loop has stopped once they returned,
            # so that ``stop`` gives back every claim and no connection outlives the engine.
            await self._threads.settle()

    async def _start_due(self, free: int) -> int:
        """Notes what changed (once a tick: a report that ends does not make the
        fleet's signature worth reading again) and starts the reports of up to
        ``free`` due nodes."""
        if time.monotonic() >= self._noticed_at + self.settings.tick:
            await self.notice()
            PLACEMENT_PENDING.set(await self._threads.run(self._pending))
            self._noticed_at = time.monotonic()
        claims = await self._claim(free) if free > 0 else []
        for claim in claims:
            task = asyncio.create_task(self._report_alone(claim), name=f"placement {claim.node}")
            self.running[claim.node] = task
        return len(claims)

    async def _report_alone(self, claim: state.Claimed) -> None:
        try:
            await self._report(claim, anyio.CapacityLimiter(1))
        except (SQLAlchemyError, OSError) as exc:
            # Not recorded: the lease runs out and the node is reported again.
            log.warning("placement: node %s: its outcome was not stored: %s", claim.node, exc)
        except Exception:
            log.exception("placement: node %s: its report failed", claim.node)
        finally:
            self.running.pop(claim.node, None)
            self._freed.set()

    async def round(self) -> int:
        """One round, run to its end: up to ``batch`` due nodes reported,
        ``concurrency`` at a time; the number of nodes it reported (or tried to)."""
        await self.notice()
        claims = await self._claim(self.settings.batch)
        if claims:
            limiter = anyio.CapacityLimiter(self.settings.concurrency)
            async with anyio.create_task_group() as group:
                for claim in claims:
                    group.start_soon(self._report, claim, limiter)
        PLACEMENT_PENDING.set(await self._threads.run(self._pending))
        return len(claims)

    async def notice(self) -> None:
        """When the inventory or the agents moved: every tree again, and the nodes
        whose tree differs from the one reported marked pending."""
        signature = await self._threads.run(self._read_signature)
        if signature != self._signature:
            self._trees = await self._threads.run(self._read_trees)
            digests = {node: tree.digest for node, tree in self._trees.items()}
            await self._threads.run(state.note_trees, self.sessions, digests)
            self._signature = signature

    async def _claim(self, limit: int) -> list[state.Claimed]:
        # Read before the lease's start is: the report stops a little early, never late.
        until = time.monotonic() + self.settings.lease * REPORT_SHARE
        now = utcnow()
        claims = await self._threads.run(
            lambda: state.claim_nodes(
                self.sessions,
                self.owner,
                now,
                self.settings.lease,
                now - dt.timedelta(seconds=self.settings.check_interval),
                limit,
                list(self.running),
            )
        )
        return [dataclasses.replace(claim, until=until) for claim in claims]

    async def stop(self) -> None:
        """Gives back the nodes this conductor holds, for others to report at once."""
        await self._threads.run(state.release_nodes, self.sessions, self.owner)

    def _pending(self) -> int:
        with self.sessions() as session:
            return state.pending_count(session)

    def _read_signature(self) -> tuple[int, str]:
        with self.sessions() as session:
            generation = read_generation(session)
            agents = session.execute(
                select(Agent.name, Agent.state, Agent.resource_provider_name).order_by(Agent.id)
            ).all()
        return generation, hashlib.sha256(repr(agents).encode()).hexdigest()

    def _read_trees(self) -> dict[str, NodeTree]:
        with self.sessions() as session:
            return desired_trees(session)

    async def _report(self, claim: state.Claimed, limiter: anyio.CapacityLimiter) -> None:
        tree = self._trees.get(claim.node) or NodeTree(claim.node, claim.node, ())
        outcome: Outcome | None = None
        error: str | None = None
        try:
            outcome = await self._threads.run(self._reconcile, claim, tree, limiter=limiter)
        except PlacementError as exc:
            error = str(exc)
        except Exception as exc:
            # The node is given back with the error (accel placement status shows it),
            # not left claimed until its lease runs out.
            log.exception("placement: node %s: unexpected failure", claim.node)
            error = f"unexpected failure: {exc!r:.300}"
        if outcome is not None:
            error = outcome.error
        if error:
            log.warning("placement: node %s: %s", claim.node, error)
        # ``notice`` may have run while the report was under way, with this node
        # pending: the tree it found then is the one to report next.
        latest = self._trees.get(claim.node) or NodeTree(claim.node, claim.node, ())
        await self._threads.run(
            lambda: state.record_outcome(
                self.sessions,
                self.owner,
                claim.node,
                tree.digest,
                outcome,
                error,
                utcnow(),
                self.settings.retry_after,
                outdated=latest.digest != tree.digest,
            )
        )

    def _reconcile(self, claim: state.Claimed, tree: NodeTree) -> Outcome:
        with calls_until(claim.until):
            return reconcile_node(self.client, tree, claim.providers, claim.root_uuid)


def placement_loop(
    sessions: sessionmaker[Session],
    owner: str,
    credentials: OpenStackCredentials,
    url: str | None,
    settings: PlacementSettings,
) -> PlacementLoop:
    """The loop reporting to Placement at ``url`` (None: Keystone's catalog)."""
    adapter = make_adapter(make_session(credentials), credentials, "placement", url)
    return PlacementLoop(sessions, PlacementClient(adapter), owner, settings)
