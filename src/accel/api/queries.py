"""Reading the database for the api: sessions in worker threads, and the uuids and
lists a query or path names."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import Connection, Engine, Select
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from accel.db.group_commit import GroupCommit
from accel.errors import InvalidInput, NotFound
from accel.web.queries import only_params

Result = TypeVar("Result")


class Reader:
    """Runs read-only queries off the event loop."""

    def __init__(self, sessions: sessionmaker[Session], engine: Engine) -> None:
        self.sessions = sessions
        self.engine = engine

    async def run(self, query: Callable[[Session], Result]) -> Result:
        def in_session() -> Result:
            with self.sessions() as session:
                return query(session)

        return await anyio.to_thread.run_sync(in_session)

    async def run_sql(self, query: Callable[[Connection], Result]) -> Result:
        """Core statements on a bare connection, without a session's bookkeeping per call."""

        def on_connection() -> Result:
            with self.engine.connect() as connection:
                return query(connection)

        return await anyio.to_thread.run_sync(on_connection)


@dataclass(frozen=True, slots=True)
class _Write:
    """One request's write: statements on a connection whose transaction other
    writes may share, or else a whole transaction of its own."""

    statements: Callable[[Connection], Any] | None = None
    transaction: Callable[[], Any] | None = None


class Writer(Reader):
    """Runs a change in one transaction off the event loop; an error rolls it all back.

    On SQLite the api's writes go through one writer thread (``GroupCommit``): SQLite
    lets one writer in at a time and makes the others sleep in its busy handler (1
    ms, then 2, 5, 10...), which at a few concurrent requests cost more than the
    writes themselves; and statements waiting together share a transaction there. On
    PostgreSQL each runs in a worker thread of its own.
    """

    def __init__(self, sessions: sessionmaker[Session], engine: Engine) -> None:
        super().__init__(sessions, engine)
        self.queue: GroupCommit[_Write, Any] | None = None
        if engine.dialect.name == "sqlite":
            self.queue = GroupCommit("api", self._write_batch, max_batch=64)

    async def run(self, query: Callable[[Session], Result]) -> Result:
        def in_transaction() -> Result:
            with self.sessions.begin() as session:
                return query(session)

        if self.queue is not None:
            result: Result = await self.queue.submit(_Write(transaction=in_transaction))
            return result
        return await anyio.to_thread.run_sync(in_transaction)

    async def run_sql(self, query: Callable[[Connection], Result]) -> Result:
        """Core statements in one transaction. On SQLite the transaction may hold
        other requests' writes too, so ``query`` must not commit or roll back, and an
        error it raises is its own (see GroupCommit)."""
        if self.queue is not None:
            result: Result = await self.queue.submit(_Write(statements=query))
            return result

        def in_transaction() -> Result:
            with self.engine.begin() as connection:
                return query(connection)

        return await anyio.to_thread.run_sync(in_transaction)

    def close(self) -> None:
        """Lets the writes already queued finish, then stops the writer thread."""
        if self.queue is not None:
            self.queue.close()

    def _write_batch(self, batch: list[_Write]) -> list[Any]:
        """Each write's result or exception, in batch order (on the writer thread).

        The statements share one transaction, written first: if it raises, nothing of
        the batch has run and GroupCommit writes each again alone. A whole transaction
        (an ORM session's, with its inventory watch) runs after them, on its own.
        """
        outcomes: list[Any] = [None] * len(batch)
        shared = [(i, w.statements) for i, w in enumerate(batch) if w.statements is not None]
        if shared:
            with self.engine.begin() as connection:
                for i, statements in shared:
                    outcomes[i] = statements(connection)
        for i, write in enumerate(batch):
            if write.transaction is not None:
                try:
                    outcomes[i] = write.transaction()
                except Exception as exc:  # that request's own error, as to_thread raises it
                    outcomes[i] = exc
        return outcomes


def reader(request: Request) -> Reader:
    found: Reader = request.app.state.reader
    return found


def writer(request: Request) -> Writer:
    found: Writer = request.app.state.writer
    return found


def comma_list(text: str, what: str) -> list[str]:
    """The comma-separated items of a query parameter; InvalidInput if one is empty
    (``a,,b``, a trailing comma): as with an empty parameter, a filter would quietly
    match less than the caller meant."""
    items = text.split(",")
    if not all(items):
        raise InvalidInput(f"{what} must be separated by commas, with no empty entry")
    return items


def uuid_list(text: str, what: str) -> list[str]:
    """A comma-separated list of uuids, none empty; InvalidInput naming the first bad one."""
    return [valid_uuid(item, what) for item in comma_list(text, f"{what}s")]


def valid_uuid(text: str, what: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError as exc:
        raise InvalidInput(f"{what} {text!r} is not a valid UUID") from exc


async def one_by_uuid(
    request: Request, what: str, select_one: Callable[[str], Select[Result]]
) -> Result:
    """The one row the path's uuid names: 400 for a malformed uuid, 404 when none."""
    only_params(request, ())
    uuid = valid_uuid(request.path_params["uuid"], f"{what.lower()} uuid")

    def query(session: Session) -> Result | None:
        found: Result | None = session.scalar(select_one(uuid))
        return found

    found = await reader(request).run(query)
    if found is None:
        raise NotFound(f"{what} not found with uuid={uuid}")
    return found
