"""Group commit: many callers' small writes made in one database transaction.

At fleet scale most of the conductor's writes are tiny and many: a heartbeat, a sync
that changed nothing. One transaction each made the commit, the row locks and the
hop to a worker thread the conductor's main cost (its profile at 1,000 agents). A
``GroupWriter`` queues its callers' items and one task writes whatever has gathered,
up to ``max_batch`` items, in one call of ``write_batch`` (one transaction) while the
next batch gathers. With ``linger`` set, a batch that is not full waits that long
for more callers before it is written: heartbeats arrive spread out, one at a time,
and a few milliseconds turn one transaction per heartbeat into one per handful.

Each caller gets its own item's outcome: ``write_batch`` returns an exception in an
item's place for a failure that is that item's alone (a lost lease). A batch that
fails as a whole for its data (a constraint, a value one agent sent) is written
again item by item, so that one bad item fails only its own caller; a database that
is away fails every caller of the batch, as it would have failed each of them alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Generic, TypeVar

import anyio.to_thread

from accel.db.outage import DATABASE_AWAY
from accel.metrics import WRITE_BATCH_ITEMS

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

WriteBatch = Callable[[list[T]], Sequence["R | Exception"]]


def fleet_linger(heartbeat_interval: float) -> float:
    """How long a fleet's heartbeats, or its syncs' reports, wait for others to share
    their transaction.

    A hundredth of the heartbeat interval, up to a quarter second: an agent does not
    notice its heartbeat answered that much later, nor an operator a sync stored that
    much later. Heartbeats, and the syncs of the nodes whose hardware changed, come
    spread over the interval; a transaction's fixed cost is then paid once for about
    a hundredth of them (or 256, whichever is less), not once each; a changed node's
    report costs far less CPU stored with others than alone (docs/benchmarks.md).
    """
    return min(0.25, heartbeat_interval / 100)


class GroupWriter(Generic[T, R]):
    def __init__(
        self,
        name: str,
        write_batch: WriteBatch[T, R],
        max_batch: int = 256,
        linger: float = 0.0,
        weight: Callable[[T], int] | None = None,
        max_weight: int | None = None,
    ) -> None:
        """With ``weight`` and ``max_weight``, a batch also stops where its items'
        weights would pass ``max_weight`` (an item heavier than that goes alone): a
        transaction's length, and the database lock it holds, follows what it
        writes, not how many callers it serves."""
        self.name = name
        self.write_batch = write_batch
        self.max_batch = max_batch
        self.linger = linger
        self.weight = weight
        self.max_weight = max_weight
        # Each caller's item, its future, and when it came (time.monotonic()).
        self._queue: list[tuple[T, asyncio.Future[R], float]] = []
        self._ready = asyncio.Event()
        self._full = asyncio.Event()  # a whole batch waits: lingering is over
        self._task: asyncio.Task[None] | None = None
        self._writing: list[asyncio.Future[R]] = []
        self._writing_came: float | None = None  # the batch being written: its first's
        self._closed = False
        # How well the writes are batched, for operators (accel_write_batch_items).
        self._batch_items = WRITE_BATCH_ITEMS.labels(name)

    async def submit(self, item: T) -> R:
        """Writes ``item`` with whatever else is waiting; its outcome, or its error."""
        if self._closed:
            raise RuntimeError(f"the {self.name} writer is closed")
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"group writer {self.name}")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future, time.monotonic()))
        self._ready.set()
        if len(self._queue) >= self.max_batch:
            self._full.set()
        return await future

    def oldest_waiting(self) -> float | None:
        """When (time.monotonic()) the oldest item not yet written came; None if none.

        What was written is complete up to then: a reader of the database may judge
        what these items write only up to that moment (the liveness sweep).
        """
        times = [came for _, _, came in self._queue[:1]]
        if self._writing_came is not None:
            times.append(self._writing_came)
        return min(times, default=None)

    async def aclose(self) -> None:
        """Stops writing; callers still waiting are cancelled."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        for future in [*self._writing, *(future for _, future, _ in self._queue)]:
            future.cancel()
        self._queue.clear()

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            # The linger runs from the first waiting caller's coming: one that came
            # while the last batch was written has waited that long already.
            if self._queue and len(self._queue) < self.max_batch:
                left = self.linger - (time.monotonic() - self._queue[0][2])
                if left > 0:
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), left)
            self._ready.clear()
            self._full.clear()
            # Only what gathered: callers that come while it is written gather (and
            # linger) for the next round. Taking them at once wrote a steady trickle one
            # or two at a time, each write picking up what came during the last one.
            gathered = len(self._queue)
            while gathered:
                taken = self._queue[: self._batch_length(min(gathered, self.max_batch))]
                del self._queue[: len(taken)]
                gathered -= len(taken)
                # A caller that gave up (a sync cancelled on losing its lease) is dropped.
                batch = [(item, future) for item, future, _ in taken if not future.done()]
                if batch:
                    self._writing = [future for _, future in batch]
                    self._writing_came = taken[0][2]
                    try:
                        await self._write(batch)
                    finally:
                        self._writing, self._writing_came = [], None

    def _batch_length(self, most: int) -> int:
        """How many of the first ``most`` waiting items the next batch takes."""
        if self.weight is None or self.max_weight is None:
            return most
        total = 0
        for index, (item, _, _) in enumerate(self._queue[:most]):
            total += self.weight(item)
            if total > self.max_weight:
                return max(index, 1)
        return most

    async def _write(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        self._batch_items.observe(len(items))
        try:
            outcomes = await anyio.to_thread.run_sync(self.write_batch, items)
        except DATABASE_AWAY as exc:
            outcomes = [exc] * len(batch)
        except Exception as exc:  # one item's data (a constraint, a value): find which
            if len(batch) == 1:
                outcomes = [exc]
            else:
                log.warning(
                    "%s: a batch of %d failed (%s); writing it item by item",
                    self.name,
                    len(batch),
                    exc,
                )
                outcomes = [await self._write_alone(item) for item in items]
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _write_alone(self, item: T) -> R | Exception:
        try:
            (outcome,) = await anyio.to_thread.run_sync(self.write_batch, [item])
        except Exception as exc:  # this item's own failure
            return exc
        return outcome
