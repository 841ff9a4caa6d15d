"""One discovery at a time, numbered, with waiters: shared by drivers and agents.

Every started discovery gets the next generation number. A start while one runs
joins it (same number), unless the caller knows the running one is stale (say, a
driver registered since it began): then one more discovery follows it. Waiters
ask for a generation and get the last completed result once it is at least that
new, or when their wait runs out. A discovery that fails keeps the previous
result, so a waiter sees an older generation and knows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Result = TypeVar("Result")


class DiscoveryState(Generic[Result]):
    def __init__(self, initial: Result) -> None:
        self.generation = 0
        self.result = initial
        self.last_error: str | None = None
        self._finished_generation = 0
        self._running: asyncio.Task[None] | None = None
        self._running_generation = 0
        self._follow_up: Callable[[], Awaitable[Result]] | None = None
        self._changed = asyncio.Condition()

    @property
    def running(self) -> bool:
        return self._running is not None and not self._running.done()

    def start(self, run: Callable[[], Awaitable[Result]], join: bool = True) -> int:
        """Starts a discovery, or joins the one running; returns its generation.

        With ``join`` false a running discovery is not good enough: another one runs
        right after it, and its generation is returned.
        """
        if self.running:
            if join:
                return self._running_generation
            self._follow_up = run
            return self._running_generation + 1
        self._running_generation += 1
        generation = self._running_generation
        self._running = asyncio.create_task(self._run(generation, run), name="discovery")
        return generation

    async def _run(self, generation: int, run: Callable[[], Awaitable[Result]]) -> None:
        try:
            result = await run()
        except Exception as exc:  # a failed discovery must not take the service down
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("discovery %d failed", generation)
        else:
            self.result = result
            self.generation = generation
            self.last_error = None
        finally:
            self._finished_generation = generation
            async with self._changed:
                self._changed.notify_all()
            follow_up, self._follow_up = self._follow_up, None
            if follow_up is not None:
                self._running = None
                self.start(follow_up)

    async def wait_for(self, generation: int, wait: float) -> tuple[int, Result]:
        """The last completed result, after waiting up to ``wait`` s for ``generation``."""
        if generation > self._finished_generation and wait > 0:
            with suppress(TimeoutError):
                async with asyncio.timeout(wait), self._changed:
                    await self._changed.wait_for(lambda: self._finished_generation >= generation)
        return self.generation, self.result

    async def close(self) -> None:
        if self._running is not None and not self._running.done():
            self._running.cancel()
            with suppress(asyncio.CancelledError):
                await self._running
