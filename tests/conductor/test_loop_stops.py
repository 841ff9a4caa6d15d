"""A conductor loop stopped while a worker thread of its runs (the conductor stops its
loops by cancelling their tasks) ends only once that thread returned: what the
thread holds (a database connection, a claim) is given back before the conductor
releases its claims and disposes of its engine (accel.thread_calls)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.nova_events import NovaNotifier, NovaSettings
from accel.conductor.placement.loop import placement_loop
from accel.conductor.placement.settings import PlacementSettings
from accel.db.columns import utcnow
from accel.db.models import NovaEvent
from accel.openstack.credentials import OpenStackCredentials
from accel.states import NovaEventState
from accel.thread_calls import ThreadCalls
from tests.databases import migrated_sessions

DEADLINE = 30.0  # a safety net for a call that never comes, not a speed test


@pytest.fixture
def sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(sqlite_url) as sessions:
        yield sessions


class Held:
    """A call that waits, on its worker thread, until the test lets it go."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.returned = threading.Event()

    def around(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def held(*args: Any) -> Any:
            self.entered.set()
            self.release.wait(DEADLINE)
            try:
                return call(*args)
            finally:
                self.returned.set()

        return held


def placement(sessions: sessionmaker[Session], held: Held) -> Coroutine[Any, Any, None]:
    loop = placement_loop(
        sessions,
        "conductor-a",
        OpenStackCredentials(token="admin"),
        "http://127.0.0.1:9",
        PlacementSettings(tick=0.05),
    )
    loop._read_signature = held.around(loop._read_signature)  # type: ignore[method-assign]
    return loop.run()


def nova(sessions: sessionmaker[Session], held: Held) -> Coroutine[Any, Any, None]:
    now = utcnow()
    with sessions.begin() as session:
        session.execute(
            insert(NovaEvent).values(
                instance_uuid=str(uuid.uuid4()),
                events_json='[["arq", "completed"]]',
                state=NovaEventState.PENDING,
                attempts=0,
                next_attempt_at=now - dt.timedelta(seconds=1),
                created_at=now,
            )
        )
    post = held.around(lambda body: (200, b""))
    return NovaNotifier(sessions, post, NovaSettings(url=None)).run_forever()


@pytest.mark.parametrize("make", [placement, nova], ids=["placement", "nova"])
def test_a_loop_stopped_mid_call_ends_once_its_thread_returned(
    sessions: sessionmaker[Session],
    make: Callable[[sessionmaker[Session], Held], Coroutine[Any, Any, None]],
) -> None:
    held = Held()

    async def scenario() -> None:
        task = asyncio.create_task(make(sessions, held))
        try:
            assert await asyncio.to_thread(held.entered.wait, DEADLINE), "no call made"
            task.cancel()
            # Cancelled, it waits for its thread: nothing in the loop can end it sooner.
            done, _ = await asyncio.wait({task}, timeout=0.2)
            assert not done, "the loop ended while its worker thread still ran"
        finally:
            held.release.set()
            await asyncio.gather(task, return_exceptions=True)
        assert held.returned.is_set()

    asyncio.run(scenario())


def test_a_call_that_hangs_holds_a_stop_no_longer_than_its_wait() -> None:
    release = threading.Event()
    calls = ThreadCalls()

    async def scenario() -> int:
        caller = asyncio.create_task(calls.run(release.wait, DEADLINE))
        await asyncio.sleep(0)  # the caller starts its call
        assert calls.under_way == 1
        caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
        await calls.settle(wait=0.1)
        left = calls.under_way
        release.set()
        await calls.settle()
        return left

    assert asyncio.run(scenario()) == 1  # settled, with the hung call still under way
