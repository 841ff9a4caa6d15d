"""Engines for SQLite and PostgreSQL from one ``--database`` URL, and the migrations.

The user names ``sqlite:///PATH`` or ``postgresql://USER@HOST:PORT/DB``; accel picks
the DB-API driver (psycopg 3 for PostgreSQL). SQLite runs in WAL mode with a busy
timeout so the api reads while the conductor writes; foreign keys are enforced on
both. Connections are checked before use, so a restarted database costs one retry.

Every part migrates at its start, and several may start at one instant on a fresh
database, so ``migrate`` runs under a lock each backend holds across processes: a
PostgreSQL advisory lock, and for SQLite an ``flock`` on a file beside the database
(pysqlite runs DDL outside any transaction, so SQLite's own locks would not keep two
processes from creating the same table). Inside the lock Alembic reads the revision
again, so whoever waited finds the work done.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from accel.db.generation import watch_inventory

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_CONNECT_TIMEOUT_S = 10
# Any constant works; it only has to be the same for every accel process.
MIGRATION_LOCK_KEY = 0x616363656C
# How long a part waits for another's migration before it gives up and exits.
MIGRATION_WAIT_SECONDS = 300.0
MIGRATION_LOCK_SUFFIX = "-migrate.lock"
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE when lock_timeout ran out


class MigrationLockTimeout(RuntimeError):
    """Another process held the migration lock for longer than a part waits."""


def normalize_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise ValueError(
            f"unsupported database {parsed.drivername!r}: use sqlite:/// or postgresql://"
        )
    return url


def make_engine(url: str, pool_size: int = 10) -> Engine:
    """An engine for ``url``; its transactions that write inventory bump the inventory
    generation (accel.db.generation), whichever code path writes."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        return watch_inventory(engine)
    # A server that drops packets would hold a connect for the OS's TCP timeout
    # (minutes); past this, the caller sees the database as away.
    return watch_inventory(
        create_engine(
            url,
            pool_pre_ping=True,
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S},
        )
    )


def _sqlite_pragmas(connection: Any, record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(engine: Engine, wait: float = MIGRATION_WAIT_SECONDS) -> None:
    """Brings the schema to the newest revision; safe when several processes start.

    Waits at most ``wait`` seconds for another process's migration to end.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _sqlite_migration_lock(engine, wait), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # The advisory lock is a lock like any other: lock_timeout bounds the wait.
            connection.execute(text(f"SET LOCAL lock_timeout = {int(wait * 1000)}"))
            try:
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            except OperationalError as exc:
                if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                    raise
                raise MigrationLockTimeout(
                    f"another process kept migrating this database for over {wait:g}s"
                ) from exc
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@contextmanager
def _sqlite_migration_lock(engine: Engine, wait: float) -> Iterator[None]:
    """Holds an exclusive lock on a file beside a SQLite database; nothing otherwise."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    path = Path(database + MIGRATION_LOCK_SUFFIX)
    try:
        # Created readable by all (0644, less the umask): flock needs only an open
        # descriptor, so a part run as another user opens it read-only below and
        # still takes the same lock.
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:  # another user's file: a lock needs no write access
        descriptor = os.open(path, os.O_RDONLY)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise MigrationLockTimeout(
                        f"another process held {path} for over {wait:g}s"
                    ) from None
                time.sleep(0.05)
        # The file stays: removing it would let a waiter lock an unlinked file while a
        # newcomer locks a new one. Closing the descriptor drops the lock.
        yield
    finally:
        os.close(descriptor)
