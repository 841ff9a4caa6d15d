"""GroupCommit: callers' writes gathered into shared transactions, outcomes kept apart."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from accel.db.group_commit import GroupCommit
from accel.metrics import REGISTRY

metadata = MetaData()
names = Table(
    "names", metadata, Column("id", Integer, primary_key=True), Column("name", String, unique=True)
)


class Names:
    """A table with a unique column, written a batch to a transaction."""

    def __init__(self, path: Path) -> None:
        self.engine = create_engine(f"sqlite:///{path}")
        metadata.create_all(self.engine)
        self.batches: list[list[str]] = []
        self.holding, self.release = threading.Event(), threading.Event()

    def write(self, batch: list[str]) -> list[int | Exception]:
        self.batches.append(batch)
        if batch == ["held"]:  # holds the writer while others queue (behind_a_held_batch)
            self.holding.set()
            assert self.release.wait(10), "the test never let the held batch finish"
            return [0]
        outcomes: list[int | Exception] = []
        with self.engine.begin() as connection:
            for name in batch:
                if name.startswith("poison"):  # a value that breaks the whole transaction
                    raise ValueError(f"cannot store {name}")
                if name.startswith("bad"):  # refused alone, the batch goes on
                    outcomes.append(ValueError(f"{name} is refused"))
                    continue
                outcomes.append(
                    connection.execute(
                        insert(names).values(name=name).returning(names.c.id)
                    ).scalar_one()
                )
        return outcomes

    def stored(self) -> list[str]:
        with self.engine.connect() as connection:
            return sorted(connection.scalars(select(names.c.name)))


async def submit_all(writer: GroupCommit[str, int], items: list[str]) -> list[int | BaseException]:
    return await asyncio.gather(*(writer.submit(item) for item in items), return_exceptions=True)


async def behind_a_held_batch(
    writer: GroupCommit[str, int], table: Names, items: list[str]
) -> list[int | BaseException]:
    """Submits ``items`` while the writer thread is held in a first batch, so that they
    all wait together (the thread would take a lone first caller at once); their
    outcomes."""
    held = asyncio.ensure_future(writer.submit("held"))
    assert await asyncio.to_thread(table.holding.wait, 10)
    waiting = asyncio.ensure_future(submit_all(writer, items))
    for _ in range(3):  # each caller has queued its item
        await asyncio.sleep(0)
    table.release.set()
    assert await held == 0
    return await waiting


def test_concurrent_callers_share_transactions_and_get_their_own_outcomes(tmp_path: Path) -> None:
    table = Names(tmp_path / "names.db")

    async def scenario() -> list[int | BaseException]:
        writer = GroupCommit("names", table.write, max_batch=4)
        try:
            items = [f"n{i}" for i in range(5)] + ["bad1"]
            return await behind_a_held_batch(writer, table, items)
        finally:
            await writer.aclose()

    outcomes = asyncio.run(scenario())
    # gathered, at most max_batch
    assert [len(batch) for batch in table.batches] == [1, 4, 2]
    assert isinstance(outcomes[5], ValueError)
    assert sorted(o for o in outcomes[:5] if isinstance(o, int)) == [1, 2, 3, 4, 5]
    assert table.stored() == [f"n{i}" for i in range(5)]


def test_lingering_gathers_callers_that_arrive_one_by_one_until_the_batch_is_full(
    tmp_path: Path,
) -> None:
    table = Names(tmp_path / "names.db")

    async def scenario() -> list[int]:
        # An hour's linger: the test ends only because a full batch cuts it short.
        writer = GroupCommit("names", table.write, max_batch=3, linger=3600)
        try:
            waiting = []
            for name in ("a", "b", "c"):
                waiting.append(asyncio.ensure_future(writer.submit(name)))
                for _ in range(5):  # the writer runs meanwhile, and lingers
                    await asyncio.sleep(0)
            return list(await asyncio.gather(*waiting))
        finally:
            await writer.aclose()

    assert sorted(asyncio.run(scenario())) == [1, 2, 3]
    assert table.batches == [["a", "b", "c"]]


def test_each_batch_is_counted_with_its_size(tmp_path: Path) -> None:
    table = Names(tmp_path / "names.db")

    def counted(suffix: str) -> float:
        value = REGISTRY.get_sample_value(f"accel_write_batch_items_{suffix}", {"writer": "sized"})
        return value or 0.0

    before = counted("count"), counted("sum")

    async def scenario() -> None:
        writer = GroupCommit("sized", table.write, max_batch=4)
        try:
            await behind_a_held_batch(writer, table, [f"n{i}" for i in range(6)])
        finally:
            await writer.aclose()

    asyncio.run(scenario())
    assert [len(batch) for batch in table.batches] == [1, 4, 2]
    assert (counted("count") - before[0], counted("sum") - before[1]) == (3, 7)


def test_a_lone_caller_is_written_once_the_linger_is_over(tmp_path: Path) -> None:
    table = Names(tmp_path / "names.db")

    async def scenario() -> int:
        writer = GroupCommit("names", table.write, max_batch=100, linger=0.01)
        try:
            return await writer.submit("alone")
        finally:
            await writer.aclose()

    assert asyncio.run(scenario()) == 1
    assert table.batches == [["alone"]]


def test_a_constraint_failure_is_retried_item_by_item_and_fails_only_its_caller(
    tmp_path: Path,
) -> None:
    table = Names(tmp_path / "names.db")

    async def scenario() -> list[int | BaseException]:
        writer = GroupCommit("names", table.write)
        try:
            await writer.submit("taken")
            return await behind_a_held_batch(writer, table, ["a", "taken", "b"])
        finally:
            await writer.aclose()

    outcomes = asyncio.run(scenario())
    assert isinstance(outcomes[1], IntegrityError)
    assert all(isinstance(o, int) for o in (outcomes[0], outcomes[2]))
    assert table.batches[2:] == [["a", "taken", "b"], ["a"], ["taken"], ["b"]]
    assert table.stored() == ["a", "b", "taken"]


def test_a_value_that_breaks_the_batch_fails_only_its_own_caller(tmp_path: Path) -> None:
    table = Names(tmp_path / "names.db")

    async def scenario() -> list[int | BaseException]:
        writer = GroupCommit("names", table.write)
        try:
            return await submit_all(writer, ["a", "poison", "b"])
        finally:
            await writer.aclose()

    outcomes = asyncio.run(scenario())
    assert isinstance(outcomes[1], ValueError)
    assert all(isinstance(o, int) for o in (outcomes[0], outcomes[2]))
    assert table.stored() == ["a", "b"]


AWAY = [
    OperationalError("BEGIN", {}, ConnectionRefusedError("connection refused")),
    InterfaceError("BEGIN", {}, ConnectionResetError("connection lost")),
    sa_exc.TimeoutError("QueuePool limit reached, connection timed out"),
    sqlite3.OperationalError("database is locked"),
    sqlite3.InterfaceError("connection closed"),
]


@pytest.mark.parametrize("away", AWAY, ids=lambda exc: type(exc).__module__ + type(exc).__name__)
def test_a_failure_of_the_whole_batch_reaches_every_caller(away: Exception) -> None:
    """Every form of "the database is away" (accel.db.outage) fails the batch once:
    writing it again item by item would only wait for the database as many times."""
    calls: list[list[str]] = []

    def database_away(batch: list[str]) -> list[int | Exception]:
        calls.append(batch)
        raise away

    async def scenario() -> list[int | BaseException]:
        # An hour's linger: the batch goes when both have come, never before.
        writer: GroupCommit[str, int] = GroupCommit(
            "names", database_away, max_batch=2, linger=3600
        )
        try:
            return await submit_all(writer, ["a", "b"])
        finally:
            await writer.aclose()

    outcomes = asyncio.run(scenario())
    assert all(o is away for o in outcomes)
    assert calls == [["a", "b"]]


def test_closing_cancels_callers_still_waiting(tmp_path: Path) -> None:
    table = Names(tmp_path / "names.db")

    async def scenario() -> None:
        writer = GroupCommit("names", table.write)
        waiting = asyncio.ensure_future(writer.submit("late"))
        await asyncio.sleep(0)  # queued; the writer has not run yet
        await writer.aclose()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        with pytest.raises(RuntimeError, match="closed"):
            await writer.submit("later still")

    asyncio.run(scenario())


def test_callers_that_come_while_a_batch_is_written_linger_for_the_next(tmp_path: Path) -> None:
    """A steady trickle is written in batches, not one caller per write: whoever comes
    while a batch is written gathers with the next ones, as the first ones did."""
    table = Names(tmp_path / "names.db")
    writing = threading.Event()
    release = threading.Event()

    def slow_write(batch: list[str]) -> list[int | Exception]:
        writing.set()
        release.wait(10)
        return table.write(batch)

    async def scenario() -> list[int]:
        # An hour's linger: a batch goes when three have gathered, never before.
        writer = GroupCommit("names", slow_write, max_batch=3, linger=3600)
        try:
            first = [asyncio.ensure_future(writer.submit(name)) for name in ("a", "b", "c")]
            await asyncio.to_thread(writing.wait, 10)
            late = [asyncio.ensure_future(writer.submit("d"))]
            await asyncio.sleep(0)  # "d" is queued while the first batch is written
            release.set()
            await asyncio.gather(*first)
            for name in ("e", "f"):
                for _ in range(5):  # the writer runs meanwhile, and lingers
                    await asyncio.sleep(0)
                late.append(asyncio.ensure_future(writer.submit(name)))
            async with asyncio.timeout(10):  # were "d" written alone, e and f would wait
                return list(await asyncio.gather(*late))
        finally:
            await writer.aclose()

    assert sorted(asyncio.run(scenario())) == [4, 5, 6]
    assert table.batches == [["a", "b", "c"], ["d", "e", "f"]]


def test_a_batch_stops_at_its_weight_and_a_heavy_item_goes_alone(tmp_path: Path) -> None:
    # Weights as a sync's entries: a huge report does not share its transaction.
    table = Names(tmp_path / "weights.db")
    weights = {"small-1": 1, "small-2": 2, "huge": 50, "small-3": 3, "small-4": 4}
    # An hour's linger: the batches go once all five have come, never before.
    writer: GroupCommit[str, int] = GroupCommit(
        "weights",
        table.write,
        max_batch=len(weights),
        linger=3600,
        weight=weights.__getitem__,
        max_weight=10,
    )

    async def scenario() -> None:
        tasks = [asyncio.create_task(writer.submit(name)) for name in weights]
        async with asyncio.timeout(10):  # were the rest to linger again, it would wait
            await asyncio.gather(*tasks)
        await writer.aclose()

    asyncio.run(scenario())
    assert table.batches == [["small-1", "small-2"], ["huge"], ["small-3", "small-4"]]


def test_oldest_waiting_covers_queued_and_in_flight_items_until_written() -> None:
    release = threading.Event()

    def slow(batch: list[str]) -> list[int]:
        release.wait(30)
        return [len(item) for item in batch]

    async def scenario() -> None:
        writer: GroupCommit[str, int] = GroupCommit("slow", slow)
        assert writer.oldest_waiting() is None
        before = time.monotonic()
        first = asyncio.create_task(writer.submit("a"))
        await asyncio.sleep(0.05)  # "a" is being written now
        second = asyncio.create_task(writer.submit("bb"))
        await asyncio.sleep(0)
        came = writer.oldest_waiting()
        assert came is not None and before <= came <= time.monotonic()
        release.set()
        assert await first == 1 and await second == 2
        assert writer.oldest_waiting() is None
        await writer.aclose()

    asyncio.run(scenario())


def test_closing_writes_what_is_queued_first(tmp_path: Path) -> None:
    """``close`` (the api's shutdown) lets the writes already queued finish."""
    table = Names(tmp_path / "names.db")
    writing, release = threading.Event(), threading.Event()

    def slow_write(batch: list[str]) -> list[int | Exception]:
        writing.set()
        release.wait(10)
        return table.write(batch)

    async def scenario() -> list[int]:
        writer = GroupCommit("names", slow_write, linger=3600)
        first = asyncio.ensure_future(writer.submit("a"))
        await asyncio.sleep(0)
        writer.close(timeout=0)  # closed while "a" lingers: it is written at once
        assert await asyncio.to_thread(writing.wait, 10)
        with pytest.raises(RuntimeError, match="closed"):
            await writer.submit("late")
        release.set()
        return [await first]

    assert asyncio.run(scenario()) == [1]
    assert table.batches == [["a"]]


def test_callers_on_several_event_loops_each_get_their_outcome(tmp_path: Path) -> None:
    table = Names(tmp_path / "names.db")
    writer = GroupCommit("names", table.write)

    async def caller(name: str) -> int:
        return await writer.submit(name)

    outcomes: dict[str, int] = {}

    def on_its_own_loop(name: str) -> None:
        outcomes[name] = asyncio.run(caller(name))

    threads = [threading.Thread(target=on_its_own_loop, args=(name,)) for name in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    writer.close()
    assert sorted(outcomes.values()) == [1, 2, 3]
    assert table.stored() == ["a", "b", "c"]


def test_a_write_batch_with_too_few_outcomes_fails_its_callers_not_hangs() -> None:
    def forgetful(batch: list[str]) -> list[int]:
        return []

    async def scenario() -> list[int | BaseException]:
        writer: GroupCommit[str, int] = GroupCommit("forgetful", forgetful, max_batch=2)
        try:
            async with asyncio.timeout(10):
                return await submit_all(writer, ["a", "b"])
        finally:
            await writer.aclose()

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, RuntimeError) for o in outcomes), outcomes


def test_a_writer_that_dies_fails_its_callers_and_the_next_caller_gets_a_new_one(
    tmp_path: Path,
) -> None:
    table = Names(tmp_path / "dies.db")

    def weight(name: str) -> int:
        if name == "unweighable":  # a bug in the weight: the writer thread itself fails
            raise KeyError(name)
        return 1

    # Both callers are in the batch the writer weighs: it lingers for a full batch of
    # two (with no linger it could take the first alone before the second came).
    writer: GroupCommit[str, int] = GroupCommit(
        "dies", table.write, max_batch=2, linger=1.0, weight=weight, max_weight=10
    )

    async def scenario() -> tuple[list[int | BaseException], int]:
        try:
            async with asyncio.timeout(10):  # a dead writer with callers waiting would hang
                failed = await submit_all(writer, ["unweighable", "first"])
                return failed, await writer.submit("after")
        finally:
            await writer.aclose()

    failed, after = asyncio.run(scenario())
    assert all(isinstance(outcome, KeyError) for outcome in failed), failed
    assert after > 0
    assert table.stored() == ["after"]
