"""Group commit: many callers' small writes committed together by one writer thread.

Both the conductor (heartbeats, inventories) and the api on SQLite (accelerator
requests created and deleted) write many tiny changes; one transaction each made the
commit, the row locks (SQLite's one writer lock) and the hop to a worker thread and
back their main cost. A ``GroupCommit`` queues its callers' items; one thread of its
own writes whatever has gathered, up to ``max_batch`` items (and ``max_weight``), in
one call of ``write_batch`` (one transaction) while the next batch gathers, and hands
the outcomes back to each caller's event loop in one wakeup per batch.

With ``linger`` set, a batch that is not full waits that long, from its first item's
coming, for more callers: heartbeats arrive spread out, one at a time, and a few
milliseconds turn one transaction per heartbeat into one per handful. Callers that
come while a batch is written gather (and linger) for the next one: taking them
into a batch already due wrote a steady trickle one or two at a time.

Each caller gets its own item's outcome: ``write_batch`` returns an exception in an
item's place for a failure that is that item's alone (a lost lease). A batch that
fails as a whole for its data (a constraint, a value one caller sent) is written
again item by item, so that one bad item fails only its own caller; a database that
is away (``accel.db.outage``) fails every caller of the batch, as it would have
failed each of them alone, without each waiting for it again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio.to_thread

from accel.db.outage import DATABASE_AWAY
from accel.metrics import WRITE_BATCH_ITEMS

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

WriteBatch = Callable[[list[T]], Sequence["R | Exception"]]
# How long closing waits for the batch being written (a database that is away makes
# a write wait for its connect or busy timeout, which is shorter).
CLOSE_TIMEOUT = 10.0


def fleet_linger(heartbeat_interval: float) -> float:
    """How long a fleet's heartbeats, or its syncs' reports, wait for others to share
    their transaction.

    A hundredth of the heartbeat interval, up to a quarter second: an agent does not
    notice its heartbeat answered that much later, nor an operator a sync stored that
    much later. Heartbeats, and the syncs of the nodes whose hardware changed, come
    spread over the interval; a transaction's fixed cost is then paid once for about
    a hundredth of them (or ``max_batch``, whichever is less), not once each; a
    changed node's report costs far less CPU stored with others than alone
    (docs/benchmarks.md).
    """
    return min(0.25, heartbeat_interval / 100)


@dataclass(frozen=True, slots=True)
class _Waiting(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    came: float  # time.monotonic()


class GroupCommit(Generic[T, R]):
    """Writes its callers' items a batch to a transaction; see the module."""

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
        # The queue, the batch being written and the writer's state are shared by
        # the callers' event loops and the writer thread: all under this condition.
        self._changed = threading.Condition()
        self._queue: deque[_Waiting[T, R]] = deque()
        self._writing: list[_Waiting[T, R]] = []
        self._due = 0  # how many at the queue's head are written without lingering
        # Callers not yet answered, for closing to cancel; touched on the callers' loop.
        self._unsettled: set[asyncio.Future[R]] = set()
        self._closed = False
        self._thread: threading.Thread | None = None
        # How well the writes are batched, for operators (accel_write_batch_items).
        self._batch_items = WRITE_BATCH_ITEMS.labels(name)

    async def submit(self, item: T) -> R:
        """Writes ``item`` with whatever else is waiting; its outcome, or its error."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        with self._changed:
            if self._closed:
                raise RuntimeError(f"the {self.name} writer is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"group commit {self.name}", daemon=True
                )
                self._thread.start()
            self._queue.append(_Waiting(item, future, time.monotonic()))
            # The writer waits for a first item, or lingers for a full batch.
            if len(self._queue) == 1 or len(self._queue) >= self.max_batch:
                self._changed.notify()
        self._unsettled.add(future)
        try:
            return await future
        finally:
            self._unsettled.discard(future)

    def oldest_waiting(self) -> float | None:
        """When (time.monotonic()) the oldest item not yet written came; None if none.

        What was written is complete up to then: a reader of the database may judge
        what these items write only up to that moment (the liveness sweep).
        """
        with self._changed:
            times = [batch[0].came for batch in (self._writing, self._queue) if batch]
        return min(times, default=None)

    async def aclose(self) -> None:
        """Stops writing: callers still waiting are cancelled, the batch being written
        is waited for (its callers are cancelled too). Call it on the callers' loop."""
        with self._changed:
            self._closed = True
            self._queue.clear()
            self._due = 0
            self._changed.notify()
            thread = self._thread
        for future in list(self._unsettled):
            future.cancel()
        if thread is not None:
            await anyio.to_thread.run_sync(thread.join, CLOSE_TIMEOUT)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stops taking items, writes those already queued, then stops the thread."""
        with self._changed:
            self._closed = True
            self._changed.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        try:
            self._write_until_closed()
        except Exception as exc:  # a bug (a weight that raises): nobody may hang on it
            log.exception("%s: the writer stopped", self.name)
            with self._changed:
                stranded = list(self._queue)
                self._queue.clear()
                self._due = 0
                self._thread = None  # the next submit starts a writer again
            _hand_back(stranded, [exc] * len(stranded))

    def _write_until_closed(self) -> None:
        while True:
            with self._changed:
                batch = self._next_batch()
                if batch is None:
                    return
                self._writing = batch
            # A caller that gave up (a sync cancelled on losing its lease) is dropped.
            wanted = [waiting for waiting in batch if not waiting.future.done()]
            outcomes: Sequence[R | Exception] = []
            try:
                outcomes = self._write([waiting.item for waiting in wanted]) if wanted else []
            except Exception as exc:  # a bug in write_batch: its callers must not hang
                log.exception("%s: a batch could not be written", self.name)
                outcomes = [exc] * len(wanted)
            finally:
                # Written: no longer waiting, before any caller hears so.
                with self._changed:
                    self._writing = []
            _hand_back(wanted, outcomes)

    def _next_batch(self) -> list[_Waiting[T, R]] | None:
        """The next batch to write, once it is due; None once closed and drained.
        Called holding ``_changed``."""
        if not self._due:
            while not self._queue:
                if self._closed:
                    return None
                self._changed.wait()
            # The linger runs from the first waiting caller's coming: one that came
            # while the last batch was written has waited that long already.
            deadline = self._queue[0].came + self.linger
            while self._queue and len(self._queue) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            # Only what gathered is due, however many batches it takes: whoever comes
            # while those are written lingers for the round after.
            self._due = len(self._queue)
        if not self._queue:  # closed meanwhile, its callers cancelled
            return None
        taken = self._batch_length(min(self._due, self.max_batch))
        self._due -= taken
        return [self._queue.popleft() for _ in range(taken)]

    def _batch_length(self, most: int) -> int:
        """How many of the first ``most`` waiting items the next batch takes."""
        if self.weight is None or self.max_weight is None:
            return most
        total = 0
        for index in range(most):
            total += self.weight(self._queue[index].item)
            if total > self.max_weight:
                return max(index, 1)
        return most

    def _write(self, items: list[T]) -> Sequence[R | Exception]:
        self._batch_items.observe(len(items))
        try:
            outcomes = self.write_batch(items)
        except DATABASE_AWAY as exc:
            return [exc] * len(items)
        except Exception as exc:  # one item's data (a constraint, a value): find which
            if len(items) == 1:
                return [exc]
            # Each item's own error reaches its caller; the batch's is no news.
            log.debug(
                "%s: a batch of %d failed (%s); writing it item by item",
                self.name,
                len(items),
                exc,
            )
            return [self._write_alone(item) for item in items]
        if len(outcomes) != len(items):
            raise RuntimeError(f"{self.name}: {len(outcomes)} outcomes for {len(items)} items")
        return outcomes

    def _write_alone(self, item: T) -> R | Exception:
        try:
            (outcome,) = self.write_batch([item])
        except Exception as exc:  # this item's own failure
            return exc
        return outcome


def _hand_back(batch: Sequence[_Waiting[Any, Any]], outcomes: Sequence[Any]) -> None:
    """Settles every future of the batch, one wakeup per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
    for waiting, outcome in zip(batch, outcomes, strict=True):
        by_loop.setdefault(waiting.future.get_loop(), []).append((waiting.future, outcome))
    for loop, settled in by_loop.items():
        # A closed loop raises: nobody waits for these any more.
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, outcome in settled:
        if future.done():  # the caller was cancelled meanwhile
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
