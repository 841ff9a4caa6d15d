"""Sync leases: each agent's sync is run by one live conductor at a time.

A conductor takes the sync of a due agent by writing its name and an expiry into the
agent's row with one conditional UPDATE (the lease must be free or expired), so two
conductors racing for the same agent cannot both win, on SQLite or PostgreSQL. The
holder renews its leases while its syncs run and gives each back when its sync ends.
A conductor that dies stops renewing: once its leases expire, any other conductor
takes the syncs over. A holder that was stalled past its lease finds, on renewal or
when it writes, that the lease is gone, and drops its sync instead of writing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from accel.db.models import Agent
from accel.states import AgentState


class LeaseLost(Exception):
    """Another conductor holds this agent's sync now; the work in hand is discarded."""


@dataclass(frozen=True)
class Claim:
    name: str
    endpoint: str
    # The conductor whose expired lease this claim took over, if any.
    taken_from: str | None = None
    # The ETag of the agent's last stored report, if its agent gave one.
    inventory_etag: str | None = None
    # The internal version of the agent's last hello.
    internal_version: str | None = None


def _free(now: dt.datetime) -> ColumnElement[bool]:
    return or_(Agent.sync_owner.is_(None), Agent.sync_lease_until < now)


def claim_due_agents(
    sessions: sessionmaker[Session],
    owner: str,
    now: dt.datetime,
    lease_seconds: float,
    limit: int,
) -> list[Claim]:
    """Takes the leases of up to ``limit`` agents due for a sync that nobody holds."""
    if limit <= 0:
        return []
    due = and_(Agent.state == AgentState.UP, Agent.next_sync_at <= now, _free(now))
    with sessions.begin() as session:
        # On PostgreSQL the candidates are locked, and rows another conductor is
        # claiming right now skipped rather than waited for. They are read apart from
        # the UPDATE: as its IN-subquery PostgreSQL may rescan them past the LIMIT.
        candidates = session.scalars(
            select(Agent.id)
            .where(due)
            .order_by(Agent.next_sync_at, Agent.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if not candidates:
            return []
        expired = dict(
            session.execute(
                select(Agent.name, Agent.sync_owner).where(
                    due, Agent.sync_owner.is_not(None), Agent.sync_owner != owner
                )
            ).all()
        )
        # The WHERE repeats the test: on SQLite nothing was locked, and this UPDATE is
        # what makes the claim atomic (a row another conductor took no longer matches).
        rows = session.execute(
            update(Agent)
            .where(Agent.id.in_(candidates), due)
            .values(sync_owner=owner, sync_lease_until=now + dt.timedelta(seconds=lease_seconds))
            .returning(Agent.name, Agent.endpoint, Agent.inventory_etag, Agent.internal_version)
            .execution_options(synchronize_session=False)
        ).all()
    return [
        Claim(name, endpoint, expired.get(name), etag, version)
        for name, endpoint, etag, version in rows
    ]


def renew_leases(
    sessions: sessionmaker[Session],
    owner: str,
    names: Collection[str],
    now: dt.datetime,
    lease_seconds: float,
) -> set[str]:
    """Extends this conductor's leases on ``names``; the names it still holds."""
    if not names:
        return set()
    with sessions.begin() as session:
        ids = _lock_in_id_order(
            session, and_(Agent.sync_owner == owner, Agent.name.in_(list(names)))
        )
        if not ids:
            return set()
        held = session.scalars(
            update(Agent)
            .where(Agent.id.in_(ids), Agent.sync_owner == owner)
            .values(sync_lease_until=now + dt.timedelta(seconds=lease_seconds))
            .returning(Agent.name)
            .execution_options(synchronize_session=False)
        ).all()
    return set(held)


def _lock_in_id_order(session: Session, which: ColumnElement[bool]) -> list[int]:
    """Locks the matching agents' rows in id order, as every multi-row write of the
    conductor's does: on PostgreSQL an UPDATE alone locks in scan order, and two
    transactions locking overlapping rows in different orders deadlock."""
    return list(session.scalars(select(Agent.id).where(which).order_by(Agent.id).with_for_update()))


def release_all(sessions: sessionmaker[Session], owner: str) -> int:
    """Gives back every lease ``owner`` holds: at a clean stop, and at a start, for the
    leases a previous life of a conductor of the same name held when it died."""
    with sessions.begin() as session:
        ids = _lock_in_id_order(session, Agent.sync_owner == owner)
        if not ids:
            return 0
        result = session.execute(
            update(Agent)
            .where(Agent.id.in_(ids), Agent.sync_owner == owner)
            .values(sync_owner=None, sync_lease_until=None)
            .execution_options(synchronize_session=False)
        )
    return int(result.rowcount)  # type: ignore[attr-defined]


def check_and_release(agent: Agent, owner: str | None) -> None:
    """Inside the transaction that writes a sync's outcome: the lease must still be
    ``owner``'s (else ``LeaseLost``), and is given back with the write."""
    if owner is None:  # a caller outside the conductor's loop (tests, benchmarks)
        return
    if agent.sync_owner != owner:
        raise LeaseLost(f"the sync of agent {agent.name} is now {agent.sync_owner or 'nobody'}'s")
    agent.sync_owner = None
    agent.sync_lease_until = None
