"""The conductor's record of agents: hellos, heartbeats, liveness, sync bookkeeping.

An agent's periodic hello is its heartbeat. An agent that misses heartbeats for
``agent_down_after`` seconds goes DOWN with an ``agent_down`` alarm; its hardware
stays in the inventory. Its next hello brings it UP and clears the alarm. What a
hello does to the agent's next sync (from 1.5 a hello carries the ETag of the
node's hardware) is the schedule's: see ``accel.conductor.sync_schedule``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.alarms import clear_alarm, raise_alarm
from accel.conductor.leases import check_and_release
from accel.conductor.sync_schedule import (
    DEFAULT_SCHEDULE,
    ScheduleRow,
    SyncSchedule,
    Verdict,
    confirmation_sql,
    judge_hello,
    sync_now,
    unless_asked_since,
)
from accel.db.models import Agent
from accel.internal.rate_limit import TooManyRequests
from accel.states import AgentState, AlarmKind


@dataclass(frozen=True)
class HelloOutcome:
    known: bool
    sync_now: bool


class RegistryFull(TooManyRequests):
    """The conductor knows as many agents as it was told to keep."""


class NameHeld(Exception):
    """A hello names an agent that was heard lately at another endpoint: a second agent
    of the same name, or the same agent restarted on a new port. Nothing of the hello
    is recorded; the caller finds out which (see ConductorService) and may send it
    again with ``may_move``."""

    def __init__(self, name: str, endpoint: str) -> None:
        super().__init__(f"agent {name} is live at {endpoint}")
        self.name = name
        self.endpoint = endpoint


@dataclass(frozen=True)
class Hello:
    name: str
    endpoint: str
    version: str
    now: dt.datetime
    resync: bool = False
    # The ETag of the node's hardware, if the agent sent one (1.5).
    inventory_etag: str | None = None
    # The agent at the stored endpoint was found gone: this hello may take its name.
    may_move: bool = False


def record_hello(
    sessions: sessionmaker[Session],
    name: str,
    endpoint: str,
    version: str,
    now: dt.datetime,
    resync: bool = False,
    max_agents: int = 100_000,
    inventory_etag: str | None = None,
    schedule: SyncSchedule = DEFAULT_SCHEDULE,
) -> HelloOutcome:
    """Registers or refreshes an agent; idempotent for a known, healthy agent."""
    hello = Hello(name, endpoint, version, now, resync, inventory_etag)
    (outcome,) = record_hellos(sessions, [hello], max_agents, schedule)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def record_hellos(
    sessions: sessionmaker[Session],
    hellos: Sequence[Hello],
    max_agents: int = 100_000,
    schedule: SyncSchedule = DEFAULT_SCHEDULE,
    live_for: float = 0.0,
) -> list[HelloOutcome | Exception]:
    """Records several agents' hellos in one transaction; each one's outcome.

    Each hello moves its agent's next sync as ``schedule``'s rules 1 to 4 say.
    A hello from another endpoint than an UP agent's, heard within ``live_for``
    seconds, is NameHeld unless it ``may_move``.
    """
    for attempt in range(2):
        try:
            with sessions.begin() as session:
                return _record_hellos(session, hellos, max_agents, schedule, live_for)
        except IntegrityError:
            # Another conductor registered one of these agents meanwhile: the next
            # attempt finds it registered.
            if attempt:
                raise
    raise AssertionError("unreachable")


@dataclass
class _Seen:
    """A known agent as read for a batch of hellos, and what they make of it."""

    id: int
    name: str
    state: AgentState
    endpoint: str
    inventory_etag: str | None
    stored_last_seen: dt.datetime | None = None  # when it was last heard, as read
    # What the batch's hellos decide; the last hello's values win.
    last_seen: dt.datetime | None = dataclasses.field(default=None, init=False)
    internal_version: str | None = dataclasses.field(default=None, init=False)
    sync_now: bool = dataclasses.field(default=False, init=False)
    confirmed_etag: str | None = dataclasses.field(default=None, init=False)


AGENTS = Agent.metadata.tables[Agent.__tablename__]
# Every heartbeat reads and writes its agent's row, so these are Core statements built
# once (one executemany each for a batch), not ORM objects and statements built per
# batch, which cost more than the rest of a hello. Each write names only what the
# hellos own or re-tests its condition in SQL: SQLite reads outside the transaction
# and locks nothing, so a value read here may be stale by the time it is written, and
# a sync stored or an agent marked DOWN meanwhile must not be overwritten.
READ_SEEN = (
    select(
        AGENTS.c.id,
        AGENTS.c.name,
        AGENTS.c.state,
        AGENTS.c.endpoint,
        AGENTS.c.inventory_etag,
        AGENTS.c.last_seen.label("stored_last_seen"),
    )
    .where(AGENTS.c.name.in_(bindparam("names", expanding=True)))
    .order_by(AGENTS.c.id)
    .with_for_update()
)
WRITE_SEEN = (
    update(AGENTS)
    .where(AGENTS.c.id == bindparam("b_id"))
    .values(last_seen=bindparam("b_now"), internal_version=bindparam("b_version"))
)
_NOW = bindparam("b_now", type_=AGENTS.c.last_seen.type)
# Rule 2 of the schedule: a sync now, from this address.
WRITE_SYNC_NOW = (
    update(AGENTS)
    .where(AGENTS.c.id == bindparam("b_id"))
    .values(state=AgentState.UP, endpoint=bindparam("b_endpoint"), **sync_now(_NOW))
)
# Rule 3, re-tested in SQL (the row may have changed since it was read). One
# statement, not WRITE_SEEN and another, for the common heartbeat.
WRITE_SEEN_CONFIRMED = (
    update(AGENTS)
    .where(AGENTS.c.id == bindparam("b_id"))
    .values(
        last_seen=_NOW,
        internal_version=bindparam("b_version"),
        **confirmation_sql(
            ScheduleRow(
                state=AGENTS.c.state,
                inventory_etag=AGENTS.c.inventory_etag,
                next_sync_at=AGENTS.c.next_sync_at,
                last_synced_at=AGENTS.c.last_synced_at,
                last_sync_error=AGENTS.c.last_sync_error,
            ),
            etag=bindparam("b_etag"),
            now=_NOW,
            resync_at=bindparam("b_resync_at", type_=AGENTS.c.next_sync_at.type),
        ),
    )
)


def _record_hellos(
    session: Session,
    hellos: Sequence[Hello],
    max_agents: int,
    schedule: SyncSchedule,
    live_for: float,
) -> list[HelloOutcome | Exception]:
    # Locked in id order, as every batch of the conductor's does: no deadlock.
    seen = {
        row.name: _Seen(**row._mapping)
        for row in session.execute(READ_SEEN, {"names": sorted({hello.name for hello in hellos})})
    }
    new: dict[str, Agent] = {}
    known: int | None = None
    outcomes: list[HelloOutcome | Exception | None] = [None] * len(hellos)
    # New agents are inserted in name order (their unique index is locked in that
    # order on PostgreSQL): two conductors registering the same new agents collide
    # on one name and retry, instead of deadlocking.
    for index, hello in sorted(enumerate(hellos), key=lambda pair: pair[1].name):
        agent = seen.get(hello.name)
        if agent is not None:
            outcomes[index] = (
                NameHeld(agent.name, agent.endpoint)
                if _held_elsewhere(agent, hello, live_for)
                else _refresh(session, agent, hello)
            )
            continue
        fresh = new.get(hello.name)
        if fresh is not None and _held_by_new(fresh, hello, live_for):
            # Two agents of one new name whose first hellos met in this batch: the
            # first holds it, as it would if the second had come a moment later.
            outcomes[index] = NameHeld(fresh.name, fresh.endpoint)
            continue
        if fresh is not None:  # a later hello of an agent this batch registers
            fresh.last_seen, fresh.internal_version = hello.now, hello.version
            fresh.endpoint = hello.endpoint
            outcomes[index] = HelloOutcome(known=True, sync_now=False)  # due already
            continue
        if known is None:
            known = session.scalar(select(func.count()).select_from(Agent)) or 0
        if known >= max_agents:
            outcomes[index] = RegistryFull(
                f"this conductor already knows {known} agents (--max-agents)"
            )
            continue
        new[hello.name] = Agent(
            name=hello.name,
            endpoint=hello.endpoint,
            state=AgentState.UP,
            internal_version=hello.version,
            last_seen=hello.now,
            **sync_now(hello.now),
        )
        session.add(new[hello.name])
        known += 1
        outcomes[index] = HelloOutcome(known=False, sync_now=True)
    _write_seen(session, list(seen.values()), schedule.confirmed_for)
    session.flush()
    return [outcome for outcome in outcomes if outcome is not None]


def _held_by_new(fresh: Agent, hello: Hello, live_for: float) -> bool:
    return not hello.may_move and live_for > 0 and fresh.endpoint != hello.endpoint


def _held_elsewhere(agent: _Seen, hello: Hello, live_for: float) -> bool:
    if hello.may_move or live_for <= 0 or agent.endpoint == hello.endpoint:
        return False
    if agent.state != AgentState.UP:
        return False
    heard = agent.last_seen if agent.last_seen is not None else agent.stored_last_seen
    return heard is not None and heard > hello.now - dt.timedelta(seconds=live_for)


def _refresh(session: Session, agent: _Seen, hello: Hello) -> HelloOutcome:
    verdict = judge_hello(
        agent.state,
        agent.endpoint != hello.endpoint,
        hello.resync,
        hello.inventory_etag,
        agent.inventory_etag,
    )
    if agent.state != AgentState.UP:
        agent.state = AgentState.UP
        clear_alarm(session, AlarmKind.AGENT_DOWN, agent.name, hello.now)
    agent.endpoint = hello.endpoint
    agent.last_seen, agent.internal_version = hello.now, hello.version
    if verdict is Verdict.CONFIRMS:
        agent.confirmed_etag = hello.inventory_etag
    sync_now = verdict is Verdict.SYNC_NOW
    # A sync one hello of the batch asked for is not undone by a later one's ETag.
    agent.sync_now = agent.sync_now or sync_now
    return HelloOutcome(known=True, sync_now=sync_now)


def _write_seen(session: Session, agents: list[_Seen], confirmed_for: dt.timedelta) -> None:
    confirmed: list[dict[str, object]] = []  # a fleet standing still: nearly every hello
    seen: list[_Seen] = []
    # An agent whose every hello of the batch was NameHeld is not written at all.
    agents = [a for a in agents if a.last_seen is not None]
    for a in agents:
        if a.confirmed_etag is not None and not a.sync_now and a.last_seen is not None:
            resync_at = a.last_seen + confirmed_for
            confirmed.append(
                {
                    "b_id": a.id,
                    "b_now": a.last_seen,
                    "b_version": a.internal_version,
                    "b_etag": a.confirmed_etag,
                    "b_resync_at": resync_at,
                }
            )
        else:
            seen.append(a)
    if confirmed:
        session.execute(WRITE_SEEN_CONFIRMED, confirmed)
    if seen:
        session.execute(
            WRITE_SEEN,
            [{"b_id": a.id, "b_now": a.last_seen, "b_version": a.internal_version} for a in seen],
        )
    syncing = [a for a in agents if a.sync_now]
    if syncing:
        session.execute(
            WRITE_SYNC_NOW,
            [{"b_id": a.id, "b_endpoint": a.endpoint, "b_now": a.last_seen} for a in syncing],
        )


def mark_silent_agents_down(
    sessions: sessionmaker[Session], now: dt.datetime, down_after: float
) -> list[str]:
    """Agents silent for ``down_after`` seconds go DOWN, each with one alarm.

    Several conductors sweep the same table: an agent goes DOWN in the sweep whose
    conditional UPDATE changed its row, and only that sweep raises its alarm.
    """
    deadline = now - dt.timedelta(seconds=down_after)
    silent_now = and_(Agent.state == AgentState.UP, Agent.last_seen < deadline)
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
                .values(state=AgentState.DOWN)
                .execution_options(synchronize_session=False)
            )
            if not changed.rowcount:  # type: ignore[attr-defined]
                continue
            raise_alarm(
                session,
                AlarmKind.AGENT_DOWN,
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
    """Keeps the inventory as it was and retries at ``retry_at`` (the schedule's
    rules 6 and 7).

    With ``owner``, only while that conductor holds the sync lease, which it gives back.
    """
    with sessions.begin() as session:
        agent = session.scalar(select(Agent).where(Agent.name == name).with_for_update())
        if agent is not None:
            check_and_release(agent, owner)
            agent.last_sync_error = error[:2000]
            agent.next_sync_at = unless_asked_since(retry_at, agent.next_sync_at, started)


def count_by_state(sessions: sessionmaker[Session]) -> dict[AgentState, int]:
    with sessions() as session:
        rows = session.execute(select(Agent.state, func.count()).group_by(Agent.state)).all()
    return {state: count for state, count in rows}
