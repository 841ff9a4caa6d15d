"""Migrations are safe however many processes start on one fresh database at once.

Each round starts several processes that line up on a barrier and then all migrate
the same empty database; every one must succeed and the schema must be whole. Before
migrations took a lock, two of them created the same tables on SQLite and one died
with "table ... already exists".
"""

from __future__ import annotations

import fcntl
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import queue
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from accel.db.engine import (
    MIGRATION_LOCK_KEY,
    MIGRATION_LOCK_SUFFIX,
    MigrationLockTimeout,
    make_engine,
    migrate,
)
from accel.db.models import Base
from tests.postgres import ThrowawayPostgres

PROCESSES = 4
ROUNDS = 4
# Not forked from this process: each one builds its engine as a part does, without the
# test's state. They are forked from a server that imported accel once, since 16
# processes each importing it anew took most of each test's time.
CONTEXT = multiprocessing.get_context("forkserver")
CONTEXT.set_forkserver_preload(["accel.db.engine"])


def _migrate_after(
    url: str,
    barrier: multiprocessing.synchronize.Barrier,
    out: multiprocessing.queues.Queue[str],
) -> None:
    engine = make_engine(url)
    try:
        barrier.wait(timeout=60)
        migrate(engine)
        out.put("ok")
    except Exception as exc:
        out.put(f"{type(exc).__name__}: {exc}"[:500])
    finally:
        engine.dispose()


def _migrate_at_once(url: str) -> list[str]:
    """Starts PROCESSES migrations of ``url`` at one instant; each one's outcome."""
    barrier = CONTEXT.Barrier(PROCESSES)
    out: multiprocessing.queues.Queue[str] = CONTEXT.Queue()
    processes = [
        CONTEXT.Process(target=_migrate_after, args=(url, barrier, out)) for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    outcomes = []
    for _ in processes:
        try:
            outcomes.append(out.get(timeout=120))
        except queue.Empty:
            outcomes.append("no answer within 120 s")
    for process in processes:
        process.join(30)
        if process.is_alive():
            process.kill()
            process.join()
    return outcomes


def _schema_differences(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))
    finally:
        engine.dispose()


def test_migrations_started_together_on_a_fresh_sqlite_file_all_succeed(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        url = f"sqlite:///{tmp_path / f'round-{round_}' / 'accel.db'}"
        outcomes = _migrate_at_once(url)
        assert outcomes == ["ok"] * PROCESSES, f"round {round_}: {outcomes}"
        assert _schema_differences(url) == []


@pytest.mark.postgres
def test_migrations_started_together_on_a_fresh_postgresql_database_all_succeed(
    postgres: ThrowawayPostgres,
) -> None:
    for round_ in range(ROUNDS):
        url = postgres.new_database()
        outcomes = _migrate_at_once(url)
        assert outcomes == ["ok"] * PROCESSES, f"round {round_}: {outcomes}"
        assert _schema_differences(url) == []


def test_a_migration_waits_a_bounded_time_for_the_sqlite_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'accel.db'}"
    engine = make_engine(url)
    try:
        with open(str(tmp_path / "accel.db") + MIGRATION_LOCK_SUFFIX, "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            with pytest.raises(MigrationLockTimeout):
                migrate(engine, wait=0.2)
        migrate(engine, wait=0.2)  # the lock is free again
    finally:
        engine.dispose()
    assert _schema_differences(url) == []


@pytest.mark.postgres
def test_a_migration_waits_a_bounded_time_for_the_postgresql_lock(
    postgres: ThrowawayPostgres,
) -> None:
    url = postgres.new_database()
    engine = make_engine(url)
    try:
        with psycopg.connect(url) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            with pytest.raises(MigrationLockTimeout):
                migrate(engine, wait=0.2)
        migrate(engine, wait=0.2)
    finally:
        engine.dispose()
    assert _schema_differences(url) == []
