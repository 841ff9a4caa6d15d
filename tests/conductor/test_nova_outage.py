"""PostgreSQL stopped under the Nova outbox: while an event is being sent to a
recording Nova (tests/integration/nova_recorder.py), and while its outcome is being
written. The notifier runs in this process, as the conductor runs it, so that the
database can be stopped between Nova's answer and its write.

What must hold: the event reaches Nova once (a try Nova answered is not sent again
for want of its write), the row ends sent, the loop lives on and sends what comes
after, and no connection is left open once the loop and its engine are gone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.nova_events import NovaNotifier, NovaSettings, keystoneauth_post
from accel.db.columns import utcnow
from accel.db.models import NovaEvent
from accel.openstack.credentials import OpenStackCredentials
from accel.states import NovaEventState
from tests.databases import migrated_sessions
from tests.integration.nova_recorder import NovaRecorder, nova_recorder
from tests.postgres import ThrowawayPostgres, open_connections

DEADLINE = 60.0  # a safety net for what never happens, not a speed test
# A try of 2 s: its claim (2 x timeout + 1 s) lapses 5 s after it is taken, so a row
# left claimed by a lost write would be sent again well inside the test's deadline.
SETTINGS = NovaSettings(url=None, timeout=2.0, retry_delay=0.1, poll=0.1)
CREDENTIALS = dataclasses.replace(OpenStackCredentials(token="nova-events"), timeout=2.0)


@pytest.fixture(scope="module")
def nova() -> Iterator[NovaRecorder]:
    with nova_recorder() as recorder:
        yield recorder


def queue_event(sessions: sessionmaker[Session]) -> str:
    instance, now = str(uuid.uuid4()), utcnow()
    with sessions.begin() as session:
        session.execute(
            insert(NovaEvent).values(
                instance_uuid=instance,
                events_json=f'[["{uuid.uuid4()}", "completed"]]',
                state=NovaEventState.PENDING,
                attempts=0,
                next_attempt_at=now - dt.timedelta(seconds=1),
                created_at=now,
            )
        )
    return instance


def state_of(sessions: sessionmaker[Session], instance: str) -> NovaEventState | None:
    with sessions() as session:
        return session.scalar(select(NovaEvent.state).where(NovaEvent.instance_uuid == instance))


async def until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


@pytest.mark.postgres
@pytest.mark.parametrize("back", ["after_nova_answered", "before_nova_answered"])
def test_the_database_away_while_an_event_is_sent_loses_and_repeats_nothing(
    postgres: ThrowawayPostgres, nova: NovaRecorder, back: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped while Nova holds the send; back after Nova answered (the outcome's write
    met the database away) or before (the write finds it back)."""
    nova.reset("held")
    nova.let_go.clear()
    url = postgres.new_database()
    with migrated_sessions(url) as sessions:
        notifier = NovaNotifier(
            sessions,
            keystoneauth_post(CREDENTIALS, dataclasses.replace(SETTINGS, url=nova.url)),
            SETTINGS,
        )
        instance = queue_event(sessions)

        def unstored() -> bool:
            return any("not stored yet" in r.getMessage() for r in caplog.records)

        async def scenario() -> None:
            loop = asyncio.create_task(notifier.run_forever())
            try:
                await until(lambda: nova.for_instance(instance), "the event sent")
                await asyncio.to_thread(postgres.stop)
                try:
                    if back == "after_nova_answered":
                        nova.let_go.set()
                        await until(unstored, "the outcome's write failing")
                finally:
                    await asyncio.to_thread(postgres.start)
                nova.let_go.set()
                await until(lambda: state_of(sessions, instance) == "sent", "the event sent")
                # The loop lives on: an event queued after the outage is sent too.
                after = queue_event(sessions)
                notifier.wake()
                await until(lambda: state_of(sessions, after) == "sent", "the next event sent")
                assert not loop.done(), "the loop stopped"
            finally:
                loop.cancel()
                await asyncio.gather(loop, return_exceptions=True)

        with caplog.at_level(logging.WARNING, logger="accel.conductor.nova_events"):
            asyncio.run(scenario())
        assert len(nova.for_instance(instance)) == 1, "the event was sent again"
    assert open_connections(url) == []
