"""Nova's events after binds, on both databases: queued in the bind's transaction,
claimed by one conductor at a time, and brought to a final state.

The HTTP side (Nova's answers, timeouts, a conductor killed mid-send) runs against a
recording server in tests/integration/test_nova_events.py.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor import allocation
from accel.conductor.nova_events import (
    Due,
    NovaSettings,
    claim_due,
    event_body,
    forget_old,
    judge,
    record,
)
from accel.db.models import NovaEvent
from accel.states import ArqState, NovaEventState
from tests.conductor.test_arq_changes import T0, binds, new_arq, rp_of, sessions

__all__ = ["sessions"]  # the fixture, shared

SETTINGS = NovaSettings(url="http://127.0.0.1:9/v2.1", attempts=3, retry_delay=1.0)


def rows(sessions: sessionmaker[Session]) -> list[NovaEvent]:
    with sessions() as session:
        return list(session.scalars(select(NovaEvent).order_by(NovaEvent.id)))


def test_an_instance_resolved_by_a_bind_gets_one_event_row_in_the_same_transaction(
    sessions: sessionmaker[Session],
) -> None:
    instance, other = str(uuid.uuid4()), str(uuid.uuid4())
    good, bad, elsewhere = new_arq(sessions), new_arq(sessions), new_arq(sessions)
    change = binds(rp_of(sessions), (good, instance))
    change.bind += binds(rp_of(sessions, "node1_0000:6b:00.2"), (elsewhere, other)).bind
    # The instance's second request names a provider that is not there: it fails.
    change.bind.append(
        change.bind[0].model_copy(
            update={"arq_uuid": uuid.UUID(bad), "device_rp_uuid": uuid.uuid4()}
        )
    )
    outcomes = allocation.apply_changes(sessions, change, T0, notify_nova=True)
    assert {o.uuid: o.state for o in outcomes} == {
        good: ArqState.BOUND,
        bad: ArqState.BIND_FAILED,
        elsewhere: ArqState.BOUND,
    }
    queued = {row.instance_uuid: row for row in rows(sessions)}
    assert set(queued) == {instance, other}
    assert queued[instance].state == NovaEventState.PENDING
    assert queued[instance].next_attempt_at == T0
    body = event_body(instance, queued[instance].events_json)
    assert sorted((e["tag"], e["status"]) for e in body["events"]) == sorted(
        [(good, "completed"), (bad, "failed")]
    )
    assert {e["name"] for e in body["events"]} == {"accelerator-request-bound"}
    assert {e["server_uuid"] for e in body["events"]} == {instance}
    # The same bind again (its answer lost) resolves nothing new: no second event.
    allocation.apply_changes(sessions, change, T0, notify_nova=True)
    assert len(rows(sessions)) == 2


def test_without_nova_no_event_is_queued_and_a_refused_change_queues_none(
    sessions: sessionmaker[Session],
) -> None:
    arq = new_arq(sessions)
    allocation.apply_changes(sessions, binds(rp_of(sessions), (arq, str(uuid.uuid4()))), T0)
    assert rows(sessions) == []
    fresh = new_arq(sessions)
    refused = binds(rp_of(sessions), (fresh, str(uuid.uuid4()))).model_copy(
        update={"unbind": [uuid.uuid4()]}
    )
    allocation.apply_changes(sessions, refused, T0, notify_nova=True)
    assert rows(sessions) == []


def queue_one(sessions: sessionmaker[Session]) -> None:
    arq = new_arq(sessions)
    change = binds(rp_of(sessions), (arq, str(uuid.uuid4())))
    allocation.apply_changes(sessions, change, T0, notify_nova=True)


def test_one_conductor_at_a_time_sends_a_row_and_a_lapsed_claim_frees_it(
    sessions: sessionmaker[Session],
) -> None:
    queue_one(sessions)
    [first] = claim_due(sessions, T0, claim_for=5, limit=10)
    assert first.attempt == 1
    assert claim_due(sessions, T0, claim_for=5, limit=10) == []
    # Its claimer died without a word: five seconds on, another takes it.
    [again] = claim_due(sessions, T0 + dt.timedelta(seconds=5), claim_for=5, limit=10)
    assert (again.id, again.attempt) == (first.id, 2)
    # The dead claimer's late word does not overwrite the live one's try.
    assert record(sessions, first, "sent", None, SETTINGS, T0) == NovaEventState.SENT
    [row] = rows(sessions)
    assert (row.state, row.attempts) == (NovaEventState.PENDING, 2)


def test_every_row_ends_sent_or_failed(sessions: sessionmaker[Session]) -> None:
    queue_one(sessions)
    now = T0
    for attempt in (1, 2):
        [due] = claim_due(sessions, now, claim_for=30, limit=10)
        assert due.attempt == attempt
        state = record(sessions, due, "retry", "Nova answered 503", SETTINGS, now)
        assert state == NovaEventState.PENDING
        [row] = rows(sessions)
        assert row.next_attempt_at == now + dt.timedelta(seconds=SETTINGS.backoff(attempt))
        assert claim_due(sessions, now, claim_for=30, limit=10) == []  # not yet due
        now = row.next_attempt_at
    [last] = claim_due(sessions, now, claim_for=30, limit=10)
    assert record(sessions, last, "retry", "timed out", SETTINGS, now) == NovaEventState.FAILED
    [row] = rows(sessions)
    assert (row.state, row.last_error) == (NovaEventState.FAILED, "timed out")
    assert claim_due(sessions, now + dt.timedelta(days=1), claim_for=30, limit=10) == []

    queue_one(sessions)
    [due] = claim_due(sessions, now, claim_for=30, limit=10)
    assert record(sessions, due, "rejected", "Nova answered 404", SETTINGS, now) == (
        NovaEventState.FAILED
    )
    queue_one(sessions)
    [due] = claim_due(sessions, now, claim_for=30, limit=10)
    assert record(sessions, due, "sent", None, SETTINGS, now) == NovaEventState.SENT
    assert [r.state for r in rows(sessions)] == [NovaEventState.FAILED] * 2 + [NovaEventState.SENT]
    # Final rows are kept a day for operators, then forgotten.
    forget_old(sessions, now + dt.timedelta(hours=1))
    assert len(rows(sessions)) == 3
    forget_old(sessions, now + dt.timedelta(days=2))
    assert rows(sessions) == []


def events(*codes: int) -> bytes:
    return json.dumps({"events": [{"code": code, "status": "failed"} for code in codes]}).encode()


@pytest.mark.parametrize(
    ("status", "content", "outcome"),
    [
        (200, b"", "sent"),
        (200, events(200, 200), "sent"),
        (200, b"<html><body>It works!</body></html>", "retry"),  # not Nova: a portal's page
        (200, b"[" * 100_000 + b"]" * 100_000, "retry"),  # deeper than json reads
        (207, events(422, 422), "sent"),  # Nova's known race (bug 1855752)
        (207, events(200, 422), "sent"),
        (207, events(200, 404), "rejected"),
        (207, b"<html>", "retry"),
        (207, b'{"events": [{"no": "code"}]}', "retry"),
        (400, b"bad", "rejected"),
        (404, b"no instance", "rejected"),
        (401, b"", "retry"),
        (500, b"", "retry"),
        (503, b"", "retry"),
        (302, b"", "retry"),
    ],
)
def test_nova_s_answers(status: int, content: bytes, outcome: str) -> None:
    got, error = judge(status, content)
    assert got == outcome
    assert (error is None) == (outcome == "sent")


def test_backoff_doubles_up_to_its_cap() -> None:
    settings = NovaSettings(url=None, retry_delay=1.0, max_delay=60.0)
    assert [settings.backoff(n) for n in (1, 2, 3, 7, 8, 20)] == [1, 2, 4, 60, 60, 60]


def test_a_due_row_is_its_body() -> None:
    due = Due(1, "i", json.dumps([["a", "completed"]]), 1)
    assert event_body(due.instance_uuid, due.events_json) == {
        "events": [
            {
                "name": "accelerator-request-bound",
                "server_uuid": "i",
                "tag": "a",
                "status": "completed",
            }
        ]
    }
