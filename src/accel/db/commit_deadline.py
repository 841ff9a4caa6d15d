"""A deadline for a conductor's commit, on the one clock every process shares: the database's.

The api asks a conductor to change accelerator requests and waits a while. If it
gives up, it must still tell its client the truth, so a change must not land after
the api stopped listening. The api gives the conductor a time to commit before, read
from the database's clock (PostgreSQL's ``clock_timestamp()``; SQLite's is the
host's, which the api and conductor of a SQLite database share): no skew between
hosts, and a request that waited in a socket for a frozen conductor still expires.

The conductor checks the deadline as the last thing before its commit, holding the
rows it changes (``lock_for_writing`` and row locks); the api, after giving up,
takes the same locks and reads the clock: either the change committed before it
looked, or it can never commit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sqlalchemy import func, literal, select, text
from sqlalchemy.orm import Session

from accel.db.models import AcceleratorRequest
from accel.errors import InvalidInput

# Seconds the api waits for a row another transaction holds, before saying "unknown".
LOCK_WAIT_SECONDS = 10

# Days from the Julian day epoch to 1970-01-01, for SQLite's julianday().
_UNIX_EPOCH_JULIAN = 2440587.5


def database_clock(session: Session) -> float:
    """Now, in seconds since 1970, by the database's clock."""
    if session.get_bind().dialect.name == "postgresql":
        now = session.scalar(select(func.extract("epoch", func.clock_timestamp())))
    else:
        days = func.julianday(literal("now")) - _UNIX_EPOCH_JULIAN
        now = session.scalar(select(days * 86400.0))
    if now is None:
        raise RuntimeError("the database did not say what time it is")
    return float(now)


class TooLate(Exception):
    """The caller's deadline passed before the change could commit; nothing changed."""


def parse_commit_before(sent: str | None) -> float | None:
    """The deadline a caller sent (``COMMIT_BEFORE`` header), if it sent one."""
    if sent is None:
        return None
    try:
        deadline = float(sent)
    except ValueError:
        deadline = math.nan
    if not math.isfinite(deadline):
        raise InvalidInput(f"the commit deadline must be seconds since 1970, not {sent!r}")
    return deadline


def commit_in_time(session: Session, commit_before: float | None) -> None:
    """Raises TooLate (the transaction then rolls back) if the caller's deadline passed;
    the last thing before a commit, holding what the commit changes."""
    if commit_before is not None and database_clock(session) >= commit_before:
        raise TooLate("the caller's deadline passed before the change could commit")


def lock_for_writing(session: Session) -> None:
    """Makes the session's transaction a writer from its first statement.

    SQLite lets one writer in at a time, but a transaction becomes one only at its
    first write: what it read before may have changed by then. ``BEGIN IMMEDIATE``
    takes the write lock first. PostgreSQL needs nothing here (rows are locked
    ``FOR UPDATE`` as they are read); its wait for a lock is bounded instead.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("BEGIN IMMEDIATE"))
    else:
        session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT_SECONDS}s'"))


def locked_requests(session: Session, uuids: Sequence[str]) -> dict[str, AcceleratorRequest]:
    """The requests named, locked for this transaction, in one order for everyone (no
    deadlock between two transactions that lock some of the same rows)."""
    found = session.scalars(
        select(AcceleratorRequest)
        .where(AcceleratorRequest.uuid.in_(sorted(set(uuids))))
        .order_by(AcceleratorRequest.uuid)
        .with_for_update()
    )
    return {arq.uuid: arq for arq in found}
