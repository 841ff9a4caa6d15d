"""The api's SQLite writer (queries.Writer on accel.db.group_commit): writes that wait
together share one transaction, and each keeps an outcome of its own."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from accel.api.queries import Writer
from accel.db.engine import make_engine


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE item (name TEXT PRIMARY KEY)"))
    yield engine
    engine.dispose()


def commits_of(engine: Engine) -> list[int]:
    commits: list[int] = []
    event.listen(engine, "commit", lambda connection: commits.append(1))
    return commits


def insert(name: str) -> Callable[[Connection], str]:
    def work(connection: Connection) -> str:
        connection.execute(text("INSERT INTO item VALUES (:name)"), {"name": name})
        return name

    return work


def names(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.scalars(text("SELECT name FROM item ORDER BY name")))


async def behind_a_busy_writer(
    writes: Writer, queued: Sequence[Callable[[], Coroutine[Any, Any, Any]]]
) -> tuple[Any, list[Any]]:
    """Holds the writer thread in a first write while ``queued`` are submitted, so that
    they wait together; the first write's outcome and theirs (results or exceptions)."""
    started, go_on = threading.Event(), threading.Event()

    def first(connection: Connection) -> str:
        started.set()
        assert go_on.wait(30), "the test never let the first write finish"
        return insert("first")(connection)

    held = asyncio.create_task(writes.run_sql(first))
    assert await asyncio.to_thread(started.wait, 30)
    waiting = [asyncio.create_task(submit()) for submit in queued]
    await asyncio.sleep(0)  # each task has put its write on the queue
    go_on.set()
    (outcome,) = await asyncio.gather(held, return_exceptions=True)
    return outcome, await asyncio.gather(*waiting, return_exceptions=True)


def test_writes_that_wait_together_share_one_commit(engine: Engine) -> None:
    writes = Writer(sessionmaker(engine), engine)
    commits = commits_of(engine)
    queued = [partial(writes.run_sql, insert(name)) for name in "abc"]
    first, results = asyncio.run(behind_a_busy_writer(writes, queued))
    writes.close()

    assert (first, results) == ("first", ["a", "b", "c"])
    assert names(engine) == ["a", "b", "c", "first"]
    assert len(commits) == 2  # the first write's, and the three waiting ones'


def test_a_failing_write_fails_alone_and_the_others_stand(engine: Engine) -> None:
    with engine.begin() as connection:
        insert("taken")(connection)
    writes = Writer(sessionmaker(engine), engine)
    queued = [partial(writes.run_sql, insert(name)) for name in ("a", "taken", "b")]
    _, results = asyncio.run(behind_a_busy_writer(writes, queued))
    writes.close()

    assert results[0] == "a" and results[2] == "b"
    assert isinstance(results[1], IntegrityError)
    assert names(engine) == ["a", "b", "first", "taken"]


def test_a_whole_transaction_runs_in_its_turn(engine: Engine) -> None:
    writes = Writer(sessionmaker(engine), engine)
    commits = commits_of(engine)

    def own_transaction(session: Session) -> int:
        session.execute(text("INSERT INTO item VALUES ('own')"))
        return len(names(engine))

    queued: list[Callable[[], Coroutine[Any, Any, Any]]] = [
        partial(writes.run_sql, insert("a")),
        partial(writes.run, own_transaction),
        partial(writes.run_sql, insert("b")),
    ]
    _, results = asyncio.run(behind_a_busy_writer(writes, queued))
    writes.close()

    # The shared writes were committed before the whole transaction began.
    assert results == ["a", 3, "b"]
    assert names(engine) == ["a", "b", "first", "own"]
    assert len(commits) == 3


def test_a_locked_database_fails_the_batch_without_each_write_waiting_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.db"
    # A short busy timeout, so that a write waiting on the lock gives up soon.
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.2})
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE item (name TEXT PRIMARY KEY)"))
    writes = Writer(sessionmaker(engine), engine)
    tried: list[str] = []

    def counted(name: str) -> Callable[[Connection], str]:
        def work(connection: Connection) -> str:
            tried.append(name)
            return insert(name)(connection)

        return work

    async def run() -> list[Any]:
        # Another process's writer holds the lock while the batch is queued and written.
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        try:
            queued = [partial(writes.run_sql, counted(name)) for name in "abc"]
            _, results = await behind_a_busy_writer(writes, queued)
            return results
        finally:
            locker.execute("ROLLBACK")
            locker.close()

    try:
        results = asyncio.run(run())
    finally:
        writes.close()
        engine.dispose()
    assert all(isinstance(result, OperationalError) for result in results), results
    assert tried == ["a"]  # the batch gave up at its first statement; none retried
