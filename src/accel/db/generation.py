"""The inventory generation: one counter that moves whenever what the api caches moves.

The api keeps rendered answers for its hottest reads (the device and deployable
lists, single devices) and must know cheaply, on every request, whether they are
still true. Readers compare one integer; writers never have to remember it: every
engine accel makes (``accel.db.engine.make_engine``) watches the statements its
connections run (``watch_inventory``), whichever code path sends them (ORM flushes,
``session.execute``, Core statements on a bare connection such as the api's
``run_sql``, raw SQL), and a transaction that wrote to a watched table bumps the
counter just before it commits.
The one write SQLAlchemy never sees, PostgreSQL's COPY, has its one home in
``copy_rows`` below, which tells the watch itself.

Watched are the tables the cached answers render: devices, deployables, attributes.
Agents are not (a heartbeat, the hottest write, changes no cached answer), nor are
alarms, allocations or accelerator requests.

The bump is the transaction's last statement, so on PostgreSQL the counter's row
lock is held only from there to the commit, and always taken after any other lock
(no deadlock between two writers).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnDefault,
    Engine,
    Integer,
    PoolProxiedConnection,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql.dml import UpdateBase

from accel.db.models import Attribute, Base, Deployable, Device

CHANGED = "accel_inventory_changed"
WATCHED_TABLES = frozenset(cls.__tablename__ for cls in (Device, Deployable, Attribute))
# Raw SQL (text() or the driver's) naming a watched table as the one it writes to.
_RAW_WRITE = re.compile(
    r"\b(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|UPDATE(?:\s+OR\s+\w+)?|DELETE\s+FROM|COPY)"
    rf"\s+(?:\w+\.)?\"?({'|'.join(sorted(WATCHED_TABLES))})\b",
    re.IGNORECASE,
)


class InventoryGeneration(Base):
    __tablename__ = "inventory_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


GENERATION_SQL = "SELECT value FROM inventory_generation WHERE id = 1"
_BUMP = (
    update(InventoryGeneration)
    .where(InventoryGeneration.id == 1)
    .values(value=InventoryGeneration.value + 1)
)


def read_generation(session: Session) -> int:
    return session.scalar(select(InventoryGeneration.value).where(InventoryGeneration.id == 1)) or 0


def writes_inventory(context: DefaultExecutionContext) -> bool:
    """Whether a statement just run wrote to a watched table (SQLAlchemy's own DML
    by its table, raw SQL by its words)."""
    if context.isinsert or context.isupdate or context.isdelete:
        compiled = context.compiled
        dml = compiled.statement if compiled is not None else None
        return isinstance(dml, UpdateBase) and getattr(dml.table, "name", None) in WATCHED_TABLES
    # Everything else compiled is a SELECT or DDL; text() and driver SQL say it in words.
    return context.is_text and _RAW_WRITE.search(context.statement) is not None


def watch_inventory(engine: Engine) -> Engine:
    """Makes every transaction on ``engine`` that writes inventory bump the generation.

    The watch sits in the engine's dialect, not in SQLAlchemy's engine events: any
    execution listener puts every statement of every connection on SQLAlchemy's
    slower evented path (docs/benchmarks.md, "The inventory watch"), while every
    statement, whichever API sent it, already passes through the dialect's execution
    context, and every commit and rollback through ``do_commit``/``do_rollback``.
    """
    dialect = engine.dialect
    plain = dialect.execution_ctx_cls

    class WatchingContext(plain):  # type: ignore[valid-type,misc]
        def post_exec(self) -> None:
            super().post_exec()
            if writes_inventory(self):
                self.root_connection.info[CHANGED] = True

    bump = str(_BUMP.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    first = str(
        insert(InventoryGeneration)
        .values(id=1, value=1)
        .compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    )
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: PoolProxiedConnection) -> None:
        # Still inside the transaction: the counter's row lock is taken last.
        if _changed(dbapi_connection):
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(bump)
                if not cursor.rowcount:
                    cursor.execute(first)
            finally:
                cursor.close()
        commit(dbapi_connection)

    def do_rollback(dbapi_connection: PoolProxiedConnection) -> None:
        _changed(dbapi_connection)
        rollback(dbapi_connection)

    dialect.execution_ctx_cls = WatchingContext
    # The dialect is the engine's own instance: these shadow its methods for this engine only.
    setattr(dialect, "do_commit", do_commit)  # noqa: B010
    setattr(dialect, "do_rollback", do_rollback)  # noqa: B010
    return engine


def _changed(dbapi_connection: PoolProxiedConnection) -> bool:
    """Whether the connection's transaction wrote inventory; forgets it (it ends now)."""
    try:
        info = dbapi_connection.info
    except NotImplementedError:
        # The engine's first connect hands the dialect an ad hoc proxy, before any
        # transaction of ours could have written.
        return False
    return bool(info.pop(CHANGED, False))


def copy_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """``rows`` by PostgreSQL's COPY, in the session's transaction; the one write that
    goes around SQLAlchemy's statements, so it tells the inventory watch itself.

    psycopg's executemany sent rows one by one in a pipeline (a large share of a first
    inventory's CPU on PostgreSQL, by its profile); COPY streams them. Each value
    goes through its column's bind processing, and a column left out gets its
    Python-side default, as an INSERT would give it.
    """
    connection = session.connection()
    if table.name in WATCHED_TABLES:
        connection.info[CHANGED] = True
    dialect = connection.dialect
    given = list(rows[0])
    defaulted = [
        column
        for column in table.columns
        if column.name not in given and not column.primary_key and column.default is not None
    ]
    columns = [table.c[name] for name in given] + defaulted
    processors = [column.type.bind_processor(dialect) or _as_is for column in columns]
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(column.name) for column in columns)
    driver = connection.connection.driver_connection
    assert driver is not None, "the session's connection is open"
    statement = f"COPY {quote(table.name)} ({names}) FROM STDIN"
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                values = [row[name] for name in given] + [_default(c) for c in defaulted]
                copy.write_row([process(v) for process, v in zip(processors, values, strict=True)])
    except dialect.loaded_dbapi.Error as exc:
        # As SQLAlchemy would have raised it (IntegrityError, OperationalError...):
        # callers tell a bad row from a database that is away by these classes.
        raise DBAPIError.instance(
            statement, None, exc, dialect.loaded_dbapi.Error, dialect=dialect
        ) from exc


def _default(column: Column[Any]) -> Any:
    default = column.default
    assert isinstance(default, ColumnDefault), f"{column.name} has no Python-side default"
    # A callable default is wrapped by SQLAlchemy to take the execution context.
    return default.arg(None) if default.is_callable else default.arg


def _as_is(value: Any) -> Any:
    return value
