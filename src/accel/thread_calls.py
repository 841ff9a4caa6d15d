"""Worker-thread calls that a loop's stop waits out, for the conductor's loops.

A task awaiting ``anyio.to_thread.run_sync`` that is cancelled the asyncio way
(``task.cancel()``, as the conductor stops its loops) ends at once, but its thread
runs on: it may still hold a database connection, or claim rows, after the loop is
said to have stopped. Then the stop gives back what the loop holds (a claim made
after it is kept until its lease runs out) and the engine is disposed of (a
connection checked out then is returned to the old pool and never closed: psycopg
warns when it is garbage-collected). A loop that runs its calls through
``ThreadCalls`` and ends with ``settle`` ends only once its threads did, or after
``STOP_WAIT`` seconds if one hangs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar, TypeVarTuple

import anyio
import anyio.to_thread

Result = TypeVar("Result")
Args = TypeVarTuple("Args")

# Each call the loops make is bounded (database connects, peers' timeouts); this is
# the backstop for one that is not, so that a stop always ends.
STOP_WAIT = 30.0


class ThreadCalls:
    """The thread calls one loop has under way."""

    def __init__(self) -> None:
        self._running: set[asyncio.Future[Any]] = set()

    async def run(
        self,
        func: Callable[[*Args], Result],
        *args: *Args,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> Result:
        """``func(*args)`` on a worker thread; a cancelled caller leaves it to ``settle``."""
        call = asyncio.ensure_future(anyio.to_thread.run_sync(func, *args, limiter=limiter))
        self._running.add(call)
        call.add_done_callback(self._finished)
        return await asyncio.shield(call)

    def _finished(self, call: asyncio.Future[Any]) -> None:
        self._running.discard(call)
        if not call.cancelled():
            call.exception()  # its caller may be gone: the error is not left unretrieved

    @property
    def under_way(self) -> int:
        return len(self._running)

    async def settle(self, wait: float = STOP_WAIT) -> None:
        """Returns once every call under way has returned, or after ``wait`` seconds."""
        if self._running:
            await asyncio.wait(set(self._running), timeout=wait)
