"""When an agent is synced next: every rule that sets ``agents.next_sync_at``.

The conductor syncs an agent when the agent is due. The rules, in order of an
agent's life (docs/internal-api.md lists the same ones):

1. A first hello: a sync now.
2. A hello of an agent that was DOWN, from another endpoint, asking for a resync,
   or with an ETag other than the stored one: a sync now.
3. A hello whose ETag is the stored one (1.5), of an agent that is UP: as good as
   a sync that found nothing. The sync error is cleared, the last sync is the
   hello's time, and the next sync moves to a resync interval plus a heartbeat
   interval on (never nearer): it comes only if heartbeats stop confirming.
4. Any other hello (no ETag sent, or none stored): the schedule stays.
5. A complete sync stored: the next in a resync interval, a heartbeat interval
   more if the sync got an ETag (1.4) and the agent's hellos carry ETags (1.5), so
   that a heartbeat confirms first.
6. A partial sync (a driver failed) or a failed one: the next in the retry interval.
7. Rules 5 and 6 give way to a sync asked for while the sync ran.
8. A 304 for an ETag that is no longer the stored one, or the end of a setup
   operation as the node reports it (not a dry run, nor an operation the conductor
   fails itself): a sync now, in full (the stored ETag is dropped, so no heartbeat
   from before can confirm the old inventory).
9. Due: an agent that is UP and whose next sync time has come; earliest first.

Rule 3 runs for a batch of heartbeats in one SQL statement, and re-tests in SQL
that it still applies (a sync stored or a setup begun since the batch read the row
wins). Its SQL and its Python come from one function, ``_confirmation``, written
over ``_Terms``: ``SQL`` builds the statement's expressions and ``PYTHON``
evaluates the same rule on values (``after_hello``, which tests compare with what
the database does).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import and_, case, null, or_
from sqlalchemy.sql.elements import ColumnElement

from accel.db.models import Agent
from accel.internal.intervals import (
    AGENT_DOWN_AFTER,
    HEARTBEAT_INTERVAL,
    RESYNC_INTERVAL,
    SYNC_RETRY_AFTER,
)
from accel.internal.versions import OLDEST, Feature, parse_version
from accel.states import AgentState

V = TypeVar("V")  # a column's value: a Python one, or an SQL expression
B = TypeVar("B")  # a condition on such values


@dataclass(frozen=True)
class SyncSchedule:
    """The intervals, in seconds, that agents' heartbeats and syncs keep."""

    heartbeat: float = HEARTBEAT_INTERVAL
    resync: float = RESYNC_INTERVAL
    # Silent this long, an agent goes DOWN (and is not due until it is back).
    down_after: float = AGENT_DOWN_AFTER
    # After a failed or partial sync.
    retry_after: float = SYNC_RETRY_AFTER

    @property
    def confirmed_for(self) -> dt.timedelta:
        """Rule 3: how far on a confirming heartbeat moves the next sync."""
        return dt.timedelta(seconds=self.resync + self.heartbeat)

    def after_sync(self, now: dt.datetime, complete: bool, heartbeats_confirm: bool) -> dt.datetime:
        """Rules 5 and 6, for a sync read at ``now`` (a 304 is complete)."""
        if not complete:
            return now + dt.timedelta(seconds=self.retry_after)
        wait = self.resync + (self.heartbeat if heartbeats_confirm else 0.0)
        return now + dt.timedelta(seconds=wait)

    def after_failure(self, now: dt.datetime) -> dt.datetime:
        """Rule 6, for a sync that failed at ``now``."""
        return now + dt.timedelta(seconds=self.retry_after)


DEFAULT_SCHEDULE = SyncSchedule()


def hellos_carry_etags(internal_version: str | None) -> bool:
    """Rule 5: whether an agent whose last hello spoke this version sends its ETag."""
    try:
        return Feature.HELLO_ETAG.spoken_in(
            parse_version(internal_version) if internal_version else OLDEST
        )
    except ValueError:
        return False


def unless_asked_since(
    planned: dt.datetime, current: dt.datetime | None, started: dt.datetime
) -> dt.datetime:
    """Rule 7: ``planned``, unless a sync set for after ``started`` was asked for."""
    if current is None or current <= started:
        return planned
    return current


def sync_in_full_now(agent: Agent, now: dt.datetime) -> None:
    """Rule 8: due at once, with no stored ETag left for a heartbeat to confirm."""
    agent.next_sync_at = now
    agent.inventory_etag = None


def sync_now(now: V) -> dict[str, V]:
    """Rules 1 and 2: the values that make an agent due at once (a row's or an
    UPDATE's)."""
    return {"next_sync_at": now}


def due(now: dt.datetime) -> ColumnElement[bool]:
    """Rule 9, as a condition on agents (sync leases add theirs)."""
    return and_(Agent.state == AgentState.UP, Agent.next_sync_at <= now)


# Rule 9's order: the longest overdue first, then a stable one.
DUE_FIRST = (Agent.next_sync_at, Agent.id)


class Verdict(enum.Enum):
    """What a hello of a known agent makes of its schedule (rules 2 to 4)."""

    SYNC_NOW = "sync now"
    CONFIRMS = "confirms"
    SEEN = "seen"


def judge_hello(
    state: str,
    moved: bool,
    asked: bool,
    etag: str | None,
    stored_etag: str | None,
) -> Verdict:
    """Rules 2 to 4, for a hello of a known agent in ``state``, as read."""
    if state != AgentState.UP or moved or asked:
        return Verdict.SYNC_NOW
    if etag is None or stored_etag is None:
        return Verdict.SEEN
    return Verdict.CONFIRMS if etag == stored_etag else Verdict.SYNC_NOW


class _Terms(Protocol[V, B]):
    """The words rule 3 is written in; ``PYTHON`` and ``SQL`` give them meaning."""

    @property
    def nothing(self) -> V: ...
    def same(self, a: V, b: V) -> B: ...
    def up(self, state: V) -> B: ...
    def both(self, a: B, b: B) -> B: ...
    def unset_or_before(self, a: V, b: V) -> B: ...
    def choose(self, condition: B, then: V, otherwise: V) -> V: ...


class _PythonTerms:
    nothing: Any = None

    def same(self, a: Any, b: Any) -> bool:
        # As SQL's "=": nothing equals a missing value, not even another one.
        return a is not None and b is not None and bool(a == b)

    def up(self, state: Any) -> bool:
        return bool(state == AgentState.UP)

    def both(self, a: bool, b: bool) -> bool:
        return a and b

    def unset_or_before(self, a: Any, b: Any) -> bool:
        return a is None or bool(a < b)

    def choose(self, condition: bool, then: Any, otherwise: Any) -> Any:
        return then if condition else otherwise


class _SqlTerms:
    @property
    def nothing(self) -> ColumnElement[Any]:
        return null()

    def same(self, a: ColumnElement[Any], b: ColumnElement[Any]) -> ColumnElement[bool]:
        return a == b

    def up(self, state: ColumnElement[Any]) -> ColumnElement[bool]:
        return state == AgentState.UP

    def both(self, a: ColumnElement[bool], b: ColumnElement[bool]) -> ColumnElement[bool]:
        return and_(a, b)

    def unset_or_before(self, a: ColumnElement[Any], b: ColumnElement[Any]) -> ColumnElement[bool]:
        return or_(a.is_(None), a < b)

    def choose(
        self,
        condition: ColumnElement[bool],
        then: ColumnElement[Any],
        otherwise: ColumnElement[Any],
    ) -> ColumnElement[Any]:
        return case((condition, then), else_=otherwise)


PYTHON: _Terms[Any, bool] = _PythonTerms()
SQL: _Terms[ColumnElement[Any], ColumnElement[bool]] = _SqlTerms()


@dataclass(frozen=True)
class ScheduleRow(Generic[V]):
    """The columns of an agent's row that the hello rules read or write."""

    state: V
    inventory_etag: V
    next_sync_at: V
    last_synced_at: V
    last_sync_error: V


def _confirmation(
    t: _Terms[V, B], row: ScheduleRow[V], etag: V, now: V, resync_at: V
) -> ScheduleRow[V]:
    """Rule 3: ``row`` after a hello at ``now`` that sent ``etag``."""
    confirms = t.both(t.same(row.inventory_etag, etag), t.up(row.state))
    moves_on = t.both(confirms, t.unset_or_before(row.next_sync_at, resync_at))
    return ScheduleRow(
        state=row.state,
        inventory_etag=row.inventory_etag,
        next_sync_at=t.choose(moves_on, resync_at, row.next_sync_at),
        last_synced_at=t.choose(confirms, now, row.last_synced_at),
        last_sync_error=t.choose(confirms, t.nothing, row.last_sync_error),
    )


def confirmation_sql(
    columns: ScheduleRow[ColumnElement[Any]],
    etag: ColumnElement[Any],
    now: ColumnElement[Any],
    resync_at: ColumnElement[Any],
) -> dict[str, ColumnElement[Any]]:
    """Rule 3 as the values of an UPDATE of ``columns``, which it re-tests."""
    after = _confirmation(SQL, columns, etag, now, resync_at)
    return {
        "next_sync_at": after.next_sync_at,
        "last_synced_at": after.last_synced_at,
        "last_sync_error": after.last_sync_error,
    }


def confirmation(
    row: ScheduleRow[Any], etag: Any, now: dt.datetime, resync_at: dt.datetime
) -> ScheduleRow[Any]:
    """Rule 3 on values: ``row`` after the UPDATE that ``confirmation_sql`` builds."""
    return _confirmation(PYTHON, row, etag, now, resync_at)


@dataclass(frozen=True)
class HeardHello:
    """What rules 2 to 4 read of one hello of a known agent."""

    now: dt.datetime
    moved: bool = False
    asked: bool = False
    etag: str | None = None


def after_hello(
    row: ScheduleRow[Any], hello: HeardHello, schedule: SyncSchedule
) -> ScheduleRow[Any]:
    """Rules 2 to 4 on values: ``row`` as it is after ``hello``."""
    verdict = judge_hello(row.state, hello.moved, hello.asked, hello.etag, row.inventory_etag)
    if verdict is Verdict.SYNC_NOW:
        return dataclasses.replace(row, state=AgentState.UP, **sync_now(hello.now))
    if verdict is Verdict.SEEN:
        return row
    return confirmation(row, hello.etag, hello.now, hello.now + schedule.confirmed_for)
