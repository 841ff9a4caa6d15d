"""The conductor's record of agents: hellos, heartbeats, liveness, sync bookkeeping.

An agent's periodic hello is its heartbeat. An agent that misses heartbeats for
``agent_down_after`` seconds goes DOWN with an ``agent_down`` alarm; its hardware
stays in the inventory. Its next hello brings it UP, clears the alarm and asks for
a sync, as does a first hello or one from a new endpoint.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.alarms import AGENT_DOWN, clear_alarm, raise_alarm
from accel.conductor.leases import check_and_release
from accel.db.models import Agent
from accel.internal.rate_limit import TooManyRequests


@dataclass(frozen=True)
class HelloOutcome:
    known: bool
    sync_now: bool


class RegistryFull(TooManyRequests):
    """The conductor knows as many agents as it was told to keep."""


def record_hello(
    sessions: sessionmaker[Session],
    name: str,
    endpoint: str,
    version: str,
    now: dt.datetime,
    resync: bool = False,
    max_agents: int = 100_000,
) -> HelloOutcome:
    """Registers or refreshes an agent; idempotent for a known, healthy agent."""
    for _ in range(2):  # a concurrent first hello of the same agent wins the insert
        try:
            with sessions.begin() as session:
                return _record_hello(session, name, endpoint, version, now, resync, max_agents)
        except IntegrityError:
            continue
    raise RuntimeError(f"could not record the hello of agent {name}")


def _record_hello(
    session: Session,
    name: str,
    endpoint: str,
    version: str,
    now: dt.datetime,
    resync: bool,
    max_agents: int,
) -> HelloOutcome:
    agent = session.scalar(select(Agent).where(Agent.name == name).with_for_update())
    if agent is None:
        known = session.scalar(select(func.count()).select_from(Agent)) or 0
        if known >= max_agents:
            raise RegistryFull(f"this conductor already knows {known} agents (--max-agents)")
        session.add(
            Agent(
                name=name,
                endpoint=endpoint,
                state="UP",
                internal_version=version,
                last_seen=now,
                next_sync_at=now,
            )
        )
        session.flush()
        return HelloOutcome(known=False, sync_now=True)
    came_back = agent.state != "UP"
    moved = agent.endpoint != endpoint
    agent.last_seen = now
    agent.internal_version = version
    if came_back:
        agent.state = "UP"
        clear_alarm(session, AGENT_DOWN, name, now)
    if moved:
        agent.endpoint = endpoint
    sync_now = came_back or moved or resync
    if sync_now:
        agent.next_sync_at = now
    return HelloOutcome(known=True, sync_now=sync_now)


def mark_silent_agents_down(
    sessions: sessionmaker[Session], now: dt.datetime, down_after: float
) -> list[str]:
    """Agents silent for ``down_after`` seconds go DOWN, each with one alarm.

    Several conductors sweep the same table: an agent goes DOWN in the sweep whose
    conditional UPDATE changed its row, and only that sweep raises its alarm.
    """
    deadline = now - dt.timedelta(seconds=down_after)
    silent_now = and_(Agent.state == "UP", Agent.last_seen < deadline)
    with sessions.begin() as session:
        # PostgreSQL: rows another sweep holds are skipped, not waited for.
        silent = session.execute(
            select(Agent.id, Agent.name, Agent.endpoint, Agent.last_seen)
            .where(silent_now)
            .order_by(Agent.id)
            .with_for_update(skip_locked=True)
        ).all()
        down = []
        for agent_id, name, endpoint, last_seen in silent:
            # SQLite locks nothing on read: the UPDATE's WHERE decides who won.
            changed = session.execute(
                update(Agent)
                .where(Agent.id == agent_id, silent_now)
                .values(state="DOWN")
                .execution_options(synchronize_session=False)
            )
            if not changed.rowcount:  # type: ignore[attr-defined]
                continue
            raise_alarm(
                session,
                AGENT_DOWN,
                name,
                f"agent {name} at {endpoint} sent no heartbeat for "
                f"{down_after:g}s (last at {last_seen.isoformat()})",
                now,
            )
            down.append(name)
        return down


def record_sync_failure(
    sessions: sessionmaker[Session],
    name: str,
    error: str,
    started: dt.datetime,
    retry_at: dt.datetime,
    owner: str | None = None,
) -> None:
    """Keeps the inventory as it was and retries soon, unless a sync was asked for since.

    With ``owner``, only while that conductor holds the sync lease, which it gives back.
    """
    with sessions.begin() as session:
        agent = session.scalar(select(Agent).where(Agent.name == name).with_for_update())
        if agent is not None:
            check_and_release(agent, owner)
            agent.last_sync_error = error[:2000]
            if agent.next_sync_at is None or agent.next_sync_at <= started:
                agent.next_sync_at = retry_at


def count_by_state(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        rows = session.execute(select(Agent.state, func.count()).group_by(Agent.state)).all()
    return {state: count for state, count in rows}
