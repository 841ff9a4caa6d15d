"""The inventory generation: one counter that moves whenever what the api caches moves.

The api keeps rendered answers for its hottest reads (the device and deployable
lists, single devices) and must know cheaply, on every request, whether they are
still true. Every session made by ``session_factory`` watches its own writes: a
transaction that inserts, updates or deletes a device, deployable or attribute bumps
this counter in the same transaction, just before it commits, whichever process
writes (conductors, apis) and whichever code path. Readers compare one integer.

The bump is the transaction's last statement, so on PostgreSQL the counter's row
lock is held only from there to the commit, and always taken after any other lock
(no deadlock between two writers).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Integer, event, insert, select, update
from sqlalchemy.orm import (
    Mapped,
    ORMExecuteState,
    Session,
    UOWTransaction,
    mapped_column,
    sessionmaker,
)
from sqlalchemy.sql.dml import UpdateBase

from accel.db.models import Attribute, Base, Deployable, Device

CHANGED = "accel_inventory_changed"
# The rows the api's cached reads render; agents, alarms and allocations are not shown.
WATCHED_CLASSES = (Device, Deployable, Attribute)
WATCHED_TABLES = frozenset(cls.__tablename__ for cls in WATCHED_CLASSES)


class InventoryGeneration(Base):
    __tablename__ = "inventory_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


GENERATION_SQL = "SELECT value FROM inventory_generation WHERE id = 1"


def read_generation(session: Session) -> int:
    return session.scalar(select(InventoryGeneration.value).where(InventoryGeneration.id == 1)) or 0


def note_inventory_change(session: Session) -> None:
    """Marks the session's transaction as changing the inventory, for a write its own
    events cannot see (PostgreSQL's COPY, on the driver's connection)."""
    session.info[CHANGED] = True


def _after_flush(session: Session, context: UOWTransaction) -> None:
    if session.info.get(CHANGED):
        return
    if any(
        isinstance(obj, WATCHED_CLASSES) for obj in (*session.new, *session.dirty, *session.deleted)
    ):
        session.info[CHANGED] = True


def _on_execute(state: ORMExecuteState) -> None:
    statement = state.statement
    if isinstance(statement, UpdateBase) and getattr(statement, "table", None) is not None:
        name = getattr(statement.table, "name", None)
        if name in WATCHED_TABLES:
            state.session.info[CHANGED] = True


def _before_commit(session: Session) -> None:
    session.flush()
    if not session.info.pop(CHANGED, False):
        return
    bumped = session.execute(
        update(InventoryGeneration)
        .where(InventoryGeneration.id == 1)
        .values(value=InventoryGeneration.value + 1)
        .execution_options(synchronize_session=False)
    )
    if not getattr(bumped, "rowcount", 1):
        session.execute(insert(InventoryGeneration).values(id=1, value=1))


def _forget(session: Session, *args: Any) -> None:
    session.info.pop(CHANGED, None)


def watch_inventory(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """Makes every session from ``sessions`` bump the generation when it changes inventory."""
    event.listen(sessions, "after_flush", _after_flush)
    event.listen(sessions, "do_orm_execute", _on_execute)
    event.listen(sessions, "before_commit", _before_commit)
    event.listen(sessions, "after_rollback", _forget)
    return sessions
