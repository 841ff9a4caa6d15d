"""A commit deadline on the database's clock: a caller's deadline is read strictly,
a change past it raises TooLate, and the clock is the database's own."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from accel.db.commit_deadline import (
    TooLate,
    commit_in_time,
    database_clock,
    lock_for_writing,
    locked_requests,
    parse_commit_before,
)
from accel.errors import InvalidInput
from tests.databases import migrated_sessions


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(database_url) as sessions:
        yield sessions


def test_no_deadline_sent_is_none_and_one_sent_is_seconds() -> None:
    assert parse_commit_before(None) is None
    assert parse_commit_before("1765011600.250000") == 1765011600.25


@pytest.mark.parametrize("sent", ["", "soon", "nan", "inf", "-inf", "1e400"])
def test_a_deadline_that_is_not_a_finite_number_is_refused(sent: str) -> None:
    with pytest.raises(InvalidInput, match="the commit deadline must be seconds since 1970"):
        parse_commit_before(sent)


def test_the_database_clock_is_now(sessions: sessionmaker[Session]) -> None:
    # The test's host runs the database: both clocks read the same time, give or take
    # the time the query takes (bounded generously: a slow host is not a failure).
    before = time.time()
    with sessions() as session:
        clock = database_clock(session)
    assert before - 60 < clock < time.time() + 60


def test_a_change_commits_before_its_deadline_and_not_after(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        lock_for_writing(session)
        now = database_clock(session)
        commit_in_time(session, None)
        commit_in_time(session, now + 3600)
        with pytest.raises(TooLate):
            commit_in_time(session, now)


def test_requests_are_locked_and_returned_by_uuid(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        lock_for_writing(session)
        assert locked_requests(session, []) == {}
        assert locked_requests(session, ["00000000-0000-0000-0000-000000000000"]) == {}
