"""One discovery at a time, numbered: starts join, a stale one is followed, waiters see
the newest result, and a failure keeps the last good one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from accel.internal.discovery_state import DiscoveryState

WAIT = 10.0  # a bound on every wait below, never reached when the code is right


class Gate:
    """A discovery that runs until the test opens its gate, counting its runs."""

    def __init__(self, results: list[str]) -> None:
        self.results = results
        self.runs = 0
        self.started = asyncio.Event()
        self.opened = asyncio.Event()

    async def __call__(self) -> str:
        self.runs += 1
        self.started.set()
        await self.opened.wait()
        return self.results[self.runs - 1]


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), WAIT))


def test_each_discovery_started_gets_the_next_generation() -> None:
    async def test() -> None:
        state: DiscoveryState[str] = DiscoveryState("nothing yet")
        assert (state.generation, state.result, state.running) == (0, "nothing yet", False)

        async def found() -> str:
            return "found"

        first = state.start(found)
        assert first == 1 and state.running
        assert await state.wait_for(first, WAIT) == (1, "found")
        assert state.start(found) == 2
        assert await state.wait_for(2, WAIT) == (2, "found")
        assert not state.running

    run(test)


def test_a_start_while_one_runs_joins_it() -> None:
    async def test() -> None:
        state: DiscoveryState[str] = DiscoveryState("")
        gate = Gate(["first", "second"])
        assert state.start(gate) == 1
        assert state.start(gate) == 1
        gate.opened.set()
        assert await state.wait_for(1, WAIT) == (1, "first")
        assert gate.runs == 1

    run(test)


def test_a_start_that_will_not_join_runs_once_more_after_the_running_one() -> None:
    async def test() -> None:
        state: DiscoveryState[str] = DiscoveryState("")
        gate = Gate(["stale", "fresh", "never"])
        assert state.start(gate) == 1
        await gate.started.wait()
        assert state.start(gate, join=False) == 2
        assert state.start(gate, join=False) == 2  # one follow-up, however many ask
        gate.opened.set()
        assert await state.wait_for(2, WAIT) == (2, "fresh")
        assert gate.runs == 2

    run(test)


def test_a_waiter_whose_wait_runs_out_gets_the_last_result_it_has() -> None:
    async def test() -> None:
        state: DiscoveryState[str] = DiscoveryState("initial")
        gate = Gate(["late"])
        generation = state.start(gate)
        assert await state.wait_for(generation, 0.01) == (0, "initial")
        assert await state.wait_for(generation, 0) == (0, "initial")
        gate.opened.set()
        assert await state.wait_for(generation, WAIT) == (1, "late")

    run(test)


def test_a_failed_discovery_keeps_the_previous_result_and_says_why() -> None:
    async def test() -> None:
        state: DiscoveryState[str] = DiscoveryState("")

        async def good() -> str:
            return "good"

        async def broken() -> str:
            raise OSError("sysfs went away")

        await state.wait_for(state.start(good), WAIT)
        failed = state.start(broken)
        # The waiter is woken by the failure, and sees an older generation: it knows.
        assert await state.wait_for(failed, WAIT) == (1, "good")
        assert state.last_error == "OSError: sysfs went away"
        await state.wait_for(state.start(good), WAIT)
        assert state.generation == 3
        assert state.last_error is None

    run(test)


def test_closing_cancels_a_running_discovery() -> None:
    async def test() -> None:
        state: DiscoveryState[str] = DiscoveryState("before")
        gate = Gate(["never"])
        state.start(gate)
        await gate.started.wait()
        await state.close()
        assert not state.running
        assert (state.generation, state.result) == (0, "before")
        await state.close()  # closing twice is harmless

    run(test)
