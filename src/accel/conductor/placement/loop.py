"""The conductor's Placement loop: notices what changed, reports it, retries failures.

Each round reads two cheap things: the inventory generation (devices, deployables,
attributes) and the agents' states and provider names. When either moved, the
trees are computed again and the nodes whose tree differs from the one last
reported become pending (``state.note_trees``); nothing else costs a Placement call.
Then the round claims the nodes that are due (pending, or not checked for drift for
``check_interval``) and reconciles each in a worker thread, a few at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
from dataclasses import dataclass

import anyio.to_thread
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
from accel.openstack.credentials import OpenStackCredentials, make_adapter, make_session

log = logging.getLogger(__name__)


@dataclass
class PlacementLoop:
    sessions: sessionmaker[Session]
    client: PlacementClient
    owner: str
    settings: PlacementSettings = dataclasses.field(default_factory=PlacementSettings)
    _signature: tuple[int, str] | None = None
    _trees: dict[str, NodeTree] = dataclasses.field(default_factory=dict)

    async def run(self) -> None:
        while True:
            reported = 0
            try:
                reported = await self.round()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("placement round failed, trying again: %s", exc)
            except Exception:
                # Reporting must outlive a bug in one round: the next round starts over
                # from the database.
                log.exception("placement round failed, trying again")
            await asyncio.sleep(0 if reported else self.settings.tick)

    async def round(self) -> int:
        """One round; the number of nodes it reported (or tried to)."""
        signature = await anyio.to_thread.run_sync(self._read_signature)
        if signature != self._signature:
            self._trees = await anyio.to_thread.run_sync(self._read_trees)
            digests = {node: tree.digest for node, tree in self._trees.items()}
            await anyio.to_thread.run_sync(state.note_trees, self.sessions, digests)
            self._signature = signature
        now = utcnow()
        claims = await anyio.to_thread.run_sync(
            lambda: state.claim_nodes(
                self.sessions,
                self.owner,
                now,
                self.settings.lease,
                now - dt.timedelta(seconds=self.settings.check_interval),
                self.settings.batch,
            )
        )
        if claims:
            limiter = anyio.CapacityLimiter(self.settings.concurrency)
            async with anyio.create_task_group() as group:
                for claim in claims:
                    group.start_soon(self._report, claim, limiter)
        PLACEMENT_PENDING.set(await anyio.to_thread.run_sync(self._pending))
        return len(claims)

    async def stop(self) -> None:
        """Gives back the nodes this conductor holds, for others to report at once."""
        await anyio.to_thread.run_sync(state.release_nodes, self.sessions, self.owner)

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
            outcome = await anyio.to_thread.run_sync(
                reconcile_node, self.client, tree, claim.providers, limiter=limiter
            )
        except PlacementError as exc:
            error = str(exc)
        if outcome is not None:
            error = outcome.error
        if error:
            log.warning("placement: node %s: %s", claim.node, error)
        await anyio.to_thread.run_sync(
            lambda: state.record_outcome(
                self.sessions,
                self.owner,
                claim.node,
                tree.digest,
                outcome,
                error,
                utcnow(),
                self.settings.retry_after,
            )
        )


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
