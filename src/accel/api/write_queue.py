"""The api's writes on SQLite: one writer thread, several requests to a transaction.

SQLite lets one writer in at a time, so the api's writers take turns anyway. Its
writes are small (an accelerator request created or deleted), and each cost more in
the hop to a worker thread and back and in a BEGIN and COMMIT of its own than in
its statements (the profile of ARQ create+delete pairs). Here one thread takes
every write that is waiting when it is free, runs them in one transaction, and
hands their outcomes back to the event loop in one wakeup.

A write that raises rolls back the transaction it shared; each write of that batch
is then run again in a transaction of its own, so the error is that write's alone
and the others' changes stand, as if each had run by itself. A database that is
away or locked fails the whole batch, as it would have failed each write. A write
given as a whole transaction (an ORM session's, with its inventory watch) runs
alone, in its turn.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from accel.db.outage import DATABASE_AWAY

log = logging.getLogger(__name__)

R = TypeVar("R")
MAX_BATCH = 64


@dataclass(frozen=True)
class _Write:
    future: asyncio.Future[Any]
    # Statements on the batch's shared connection, or else a transaction of its own.
    statements: Callable[[Connection], Any] | None = None
    transaction: Callable[[], Any] | None = None


class WriteQueue:
    """Runs writes on one thread of its own, waiting ones together; see the module."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writes: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="api writer", daemon=True)
        self._thread.start()

    async def statements(self, work: Callable[[Connection], R]) -> R:
        """``work`` on a connection whose transaction other writes may share."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._writes.put(_Write(future, statements=work))
        return await future

    async def transaction(self, work: Callable[[], R]) -> R:
        """``work``, which makes its own transaction, in its turn."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._writes.put(_Write(future, transaction=work))
        return await future

    def close(self, timeout: float = 10.0) -> None:
        """Lets the writes already queued finish, then stops the thread."""
        self._writes.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._writes.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    write = self._writes.get_nowait()
                except queue.Empty:
                    break
                if write is None:
                    stop = True
                    break
                batch.append(write)
            outcomes = self._write(batch)
            _hand_back(batch, outcomes)
            if stop:
                return

    def _write(self, batch: list[_Write]) -> list[tuple[bool, Any]]:
        """Each write's (succeeded, result or exception), in batch order."""
        outcomes: dict[int, tuple[bool, Any]] = {}
        shared = [(i, w.statements) for i, w in enumerate(batch) if w.statements is not None]
        if len(shared) > 1:
            try:
                with self.engine.begin() as connection:
                    results = [(i, work(connection)) for i, work in shared]
                outcomes.update((i, (True, result)) for i, result in results)
                shared = []
            except DATABASE_AWAY as exc:
                # The database is away or locked past its busy timeout: each alone
                # would wait as long again, and fail as the batch did.
                outcomes.update((i, (False, exc)) for i, _ in shared)
                shared = []
            except Exception as exc:  # one write's own error: each on its own
                log.debug("a shared write failed (%s); writing each alone", exc)
        for i, work in shared:
            outcomes[i] = _alone(partial(self._on_connection, work))
        for i, write in enumerate(batch):
            if write.transaction is not None:
                outcomes[i] = _alone(write.transaction)
        return [outcomes[i] for i in range(len(batch))]

    def _on_connection(self, work: Callable[[Connection], R]) -> R:
        with self.engine.begin() as connection:
            return work(connection)


def _alone(work: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return True, work()
    except Exception as exc:  # handed to the request that asked, as to_thread would
        return False, exc


def _hand_back(batch: list[_Write], outcomes: list[tuple[bool, Any]]) -> None:
    """Settles every future of the batch, one wakeup per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for write, (succeeded, value) in zip(batch, outcomes, strict=True):
        by_loop.setdefault(write.future.get_loop(), []).append((write.future, succeeded, value))
    for loop, settled in by_loop.items():
        # A closed loop raises: nobody waits for these any more.
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, succeeded, value in settled:
        if future.done():  # the request was cancelled meanwhile
            continue
        if succeeded:
            future.set_result(value)
        else:
            future.set_exception(value)
