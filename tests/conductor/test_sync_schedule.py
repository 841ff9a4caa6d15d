"""The sync schedule's rules: as stated, as the database carries them out for a batch
of heartbeats (SQLite and PostgreSQL), and as docs/internal-api.md lists them."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor import sync_schedule
from accel.conductor.agents import AGENTS, WRITE_SEEN_CONFIRMED, Hello, record_hellos
from accel.conductor.sync_schedule import (
    HeardHello,
    ScheduleRow,
    SyncSchedule,
    after_hello,
    confirmation,
    unless_asked_since,
)
from accel.db.models import Agent

DOCS = Path(__file__).resolve().parents[2] / "docs" / "internal-api.md"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
SCHEDULE = SyncSchedule(heartbeat=10.0, resync=60.0, retry_after=5.0)
T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(hours=1)  # the heartbeat's time
SYNCED = T0 + dt.timedelta(seconds=5)
RESYNC_AT = NOW + SCHEDULE.confirmed_for
# Next sync times around the one a confirming heartbeat sets.
NEXT_TIMES = {
    "unset": None,
    "overdue": NOW - dt.timedelta(seconds=10),
    "nearer": RESYNC_AT - dt.timedelta(seconds=1),
    "same": RESYNC_AT,
    "further": RESYNC_AT + dt.timedelta(hours=1),
}


def stored(
    state: str = "UP",
    etag: str | None = '"a"',
    next_sync_at: dt.datetime | None = NEXT_TIMES["nearer"],
    error: str | None = "timed out",
) -> ScheduleRow[Any]:
    return ScheduleRow(state, etag, next_sync_at, SYNCED, error)


def read_rows(sessions: sessionmaker[Session]) -> dict[str, ScheduleRow[Any]]:
    with sessions() as session:
        rows = session.execute(
            select(
                Agent.name,
                Agent.state,
                Agent.inventory_etag,
                Agent.next_sync_at,
                Agent.last_synced_at,
                Agent.last_sync_error,
            )
        ).all()
    return {name: ScheduleRow(*values) for name, *values in rows}


def store_rows(sessions: sessionmaker[Session], rows: dict[str, ScheduleRow[Any]]) -> None:
    """Registers an agent of each name (its endpoint the name's port) and stores its row."""
    hellos = [Hello(name, endpoint(name), "1.5", T0) for name in rows]
    assert not any(isinstance(o, Exception) for o in record_hellos(sessions, hellos))
    with sessions.begin() as session:
        session.connection().execute(
            update(AGENTS)
            .where(AGENTS.c.name == bindparam("b_name"))
            .values(
                state=bindparam("b_state"),
                inventory_etag=bindparam("b_etag"),
                next_sync_at=bindparam("b_next"),
                last_synced_at=bindparam("b_synced"),
                last_sync_error=bindparam("b_error"),
            ),
            [
                {
                    "b_name": name,
                    "b_state": row.state,
                    "b_etag": row.inventory_etag,
                    "b_next": row.next_sync_at,
                    "b_synced": row.last_synced_at,
                    "b_error": row.last_sync_error,
                }
                for name, row in rows.items()
            ],
        )
    assert read_rows(sessions) == rows


def endpoint(name: str, moved: bool = False) -> str:
    return f"127.0.0.{2 if moved else 1}:{7000 + int(name.removeprefix('node'))}"


@pytest.mark.parametrize(
    ("row", "hello", "expected"),
    [
        pytest.param(
            stored(state="DOWN"),
            HeardHello(NOW, etag='"a"'),
            stored(next_sync_at=NOW),
            id="2: back from DOWN, whatever its ETag",
        ),
        pytest.param(
            stored(),
            HeardHello(NOW, moved=True, etag='"a"'),
            stored(next_sync_at=NOW),
            id="2: moved",
        ),
        pytest.param(
            stored(),
            HeardHello(NOW, asked=True, etag='"a"'),
            stored(next_sync_at=NOW),
            id="2: asked",
        ),
        pytest.param(
            stored(), HeardHello(NOW, etag='"b"'), stored(next_sync_at=NOW), id="2: another ETag"
        ),
        pytest.param(
            stored(),
            HeardHello(NOW, etag='"a"'),
            ScheduleRow("UP", '"a"', NOW + dt.timedelta(seconds=70), NOW, None),
            id="3: the stored ETag moves the next sync a resync and a heartbeat on",
        ),
        pytest.param(
            stored(next_sync_at=NEXT_TIMES["further"]),
            HeardHello(NOW, etag='"a"'),
            ScheduleRow("UP", '"a"', NEXT_TIMES["further"], NOW, None),
            id="3: never nearer",
        ),
        pytest.param(stored(), HeardHello(NOW), stored(), id="4: no ETag sent"),
        pytest.param(
            stored(etag=None), HeardHello(NOW, etag='"a"'), stored(etag=None), id="4: none stored"
        ),
    ],
)
def test_the_rules_of_a_hello(
    row: ScheduleRow[Any], hello: HeardHello, expected: ScheduleRow[Any]
) -> None:
    assert after_hello(row, hello, SCHEDULE) == expected


class Case(NamedTuple):
    row: ScheduleRow[Any]
    hello: HeardHello


HELLO_CASES = [
    Case(
        ScheduleRow(state, stored_etag, next_at, SYNCED, error),
        HeardHello(NOW, moved, asked, etag),
    )
    for state, stored_etag, etag, moved, asked, next_at, error in itertools.product(
        ["UP", "DOWN"],
        [None, '"a"'],
        [None, '"a"', '"b"'],
        [False, True],
        [False, True],
        NEXT_TIMES.values(),
        [None, "timed out"],
    )
]


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_a_batch_of_hellos_does_what_the_rules_say(sessions: sessionmaker[Session]) -> None:
    """Every combination of a stored row and a hello, in one batch as the conductor
    records heartbeats: the SQL of rules 1 to 4 against their Python."""
    cases = {f"node{index:03d}": case for index, case in enumerate(HELLO_CASES)}
    store_rows(sessions, {name: case.row for name, case in cases.items()})
    hellos = [
        Hello(name, endpoint(name, c.hello.moved), "1.5", NOW, c.hello.asked, c.hello.etag)
        for name, c in cases.items()
    ]
    record_hellos(sessions, hellos, schedule=SCHEDULE)
    after = read_rows(sessions)
    wrong = {
        name: (case, after[name])
        for name, case in cases.items()
        if after[name] != after_hello(case.row, case.hello, SCHEDULE)
    }
    assert wrong == {}


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_the_confirming_update_re_tests_rule_3_as_its_python_does(
    sessions: sessionmaker[Session],
) -> None:
    """A heartbeat's confirmation is written with the row as it is then, which may
    not be the row the hello was judged on: the SQL must carry out rule 3 on any row,
    and any ETag, as the Python does."""
    rows = [
        (ScheduleRow(state, stored_etag, next_at, SYNCED, error), etag)
        for state, stored_etag, etag, next_at, error in itertools.product(
            ["UP", "DOWN"],
            [None, '"a"', '"b"'],
            [None, '"a"'],
            NEXT_TIMES.values(),
            [None, "timed out"],
        )
    ]
    names = [f"node{index:03d}" for index in range(len(rows))]
    store_rows(sessions, {name: row for name, (row, _) in zip(names, rows, strict=True)})
    with sessions() as session:
        ids = {name: id_ for name, id_ in session.execute(select(Agent.name, Agent.id))}
    with sessions.begin() as session:
        session.execute(
            WRITE_SEEN_CONFIRMED,
            [
                {
                    "b_id": ids[name],
                    "b_now": NOW,
                    "b_version": "1.5",
                    "b_etag": etag,
                    "b_resync_at": RESYNC_AT,
                }
                for name, (_, etag) in zip(names, rows, strict=True)
            ],
        )
    after = read_rows(sessions)
    wrong = {
        name: (row, etag, after[name])
        for name, (row, etag) in zip(names, rows, strict=True)
        if after[name] != confirmation(row, etag, NOW, RESYNC_AT)
    }
    assert wrong == {}


@pytest.mark.parametrize(
    ("complete", "confirmable", "wait"),
    [(True, False, 60.0), (True, True, 70.0), (False, False, 5.0), (False, True, 5.0)],
)
def test_the_next_sync_after_a_sync(complete: bool, confirmable: bool, wait: float) -> None:
    expected = NOW + dt.timedelta(seconds=wait)
    assert SCHEDULE.after_sync(NOW, complete, confirmable) == expected


def test_a_failed_sync_is_retried_after_the_retry_interval() -> None:
    assert SCHEDULE.after_failure(NOW) == NOW + dt.timedelta(seconds=5)


@pytest.mark.parametrize(
    ("current", "kept"),
    [(None, False), (T0 - dt.timedelta(seconds=1), False), (T0, False), (NOW, True)],
)
def test_a_sync_asked_for_while_one_ran_stays(current: dt.datetime | None, kept: bool) -> None:
    planned = NOW + dt.timedelta(minutes=1)
    assert unless_asked_since(planned, current, started=T0) == (current if kept else planned)


def numbered_rules(text: str) -> list[str]:
    """The items of the first numbered list in ``text``, their lines joined."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("1. "))
    items: list[str] = []
    for line in lines[start:]:
        if not line.strip():
            break
        if re.match(r"\d+\. ", line):
            items.append(line.split(" ", 1)[1])
        else:
            items[-1] += " " + line.strip()
    return items


def test_the_docs_list_the_rules_the_module_states() -> None:
    docs = DOCS.read_text().split("## When the conductor syncs an agent", 1)[1]
    module = sync_schedule.__doc__ or ""
    assert numbered_rules(docs) == numbered_rules(module)
    assert len(numbered_rules(module)) == 9
