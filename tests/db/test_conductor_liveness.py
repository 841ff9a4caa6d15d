"""One rule of when a conductor is alive, read the same in Python and in SQL: a
record vouches until its ``alive_until``; one without it (an older release's) for
a minute after its ``last_seen``. The query's negation finds exactly the others,
which is what the takeover of a dead conductor's setup operations selects."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from accel.conductor.presence import record_conductor
from accel.db.conductor_liveness import LIVE_WITHIN, alive_at, conductor_alive, worth_asking
from accel.db.models import Conductor
from tests.databases import migrated_sessions

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
SECOND = dt.timedelta(seconds=1)
# name: (last_seen, alive_until)
RECORDS: dict[str, tuple[dt.datetime, dt.datetime | None]] = {
    "vouched": (NOW - 10 * SECOND, NOW + SECOND),
    "vouched-to-now": (NOW - 10 * SECOND, NOW),
    "lapsed": (NOW - 10 * SECOND, NOW - SECOND),
    "old-release-recent": (NOW - LIVE_WITHIN + SECOND, None),
    "old-release-at-limit": (NOW - LIVE_WITHIN, None),
    "old-release-silent": (NOW - LIVE_WITHIN - SECOND, None),
}
ALIVE = {"vouched", "vouched-to-now", "old-release-recent", "old-release-at-limit"}


def test_python_and_sql_agree_and_the_negation_finds_the_dead(database_url: str) -> None:
    assert {
        name for name, (seen, until) in RECORDS.items() if conductor_alive(until, seen, NOW)
    } == ALIVE
    with migrated_sessions(database_url) as sessions:
        for name, (seen, until) in RECORDS.items():
            record_conductor(sessions, name, f"127.0.0.1:{len(name)}", seen, alive_until=until)
        with sessions() as session:
            alive = set(session.scalars(select(Conductor.name).where(alive_at(NOW))))
            dead = set(session.scalars(select(Conductor.name).where(~alive_at(NOW))))
    assert alive == ALIVE
    assert dead == set(RECORDS) - ALIVE


def test_the_api_still_asks_a_conductor_whose_vouch_lapsed_within_a_minute(
    database_url: str,
) -> None:
    """A conductor whose writes failed for a while (a full disk) cannot renew its vouch,
    yet answers binds as soon as they work: the api asks it, not the takeover."""
    with migrated_sessions(database_url) as sessions:
        for name, (seen, until) in RECORDS.items():
            record_conductor(sessions, name, f"127.0.0.1:{len(name)}", seen, alive_until=until)
        with sessions() as session:
            asked = set(session.scalars(select(Conductor.name).where(worth_asking(NOW))))
    assert asked == {name for name, (seen, _) in RECORDS.items() if seen >= NOW - LIVE_WITHIN}
    assert "lapsed" in asked and "lapsed" not in ALIVE
