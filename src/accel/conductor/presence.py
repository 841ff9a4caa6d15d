"""Each conductor's record of itself, so the api finds a live conductor without a flag.

The record says until when it stays true without news (``alive_until``, a few of the
conductor's heartbeats ahead), so ``accel conductors list`` can tell a dead conductor
from a live one without knowing each conductor's flags.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from accel.db.conductor_liveness import conductor_alive
from accel.db.models import Conductor


def record_conductor(
    sessions: sessionmaker[Session],
    name: str,
    endpoint: str,
    now: dt.datetime,
    alive_until: dt.datetime | None = None,
    starting: bool = False,
) -> None:
    """Creates or refreshes a conductor's record; ``starting``: it (re)started now."""
    try:
        with sessions.begin() as session:
            conductor = session.scalar(select(Conductor).where(Conductor.name == name))
            if conductor is None:
                session.add(
                    Conductor(
                        name=name,
                        endpoint=endpoint,
                        started_at=now,
                        last_seen=now,
                        alive_until=alive_until,
                    )
                )
            else:
                conductor.endpoint = endpoint
                conductor.last_seen = now
                conductor.alive_until = alive_until
                if starting:  # a conductor restarted under an earlier life's name
                    conductor.started_at = now
    except IntegrityError:
        pass  # another process of the same name inserted it first; next round updates


def live_holder(
    sessions: sessionmaker[Session], name: str, endpoint: str, now: dt.datetime
) -> str | None:
    """The other endpoint at which a conductor of ``name`` vouched to be alive now.

    Two conductors of one name would share its sync leases (each start gives back
    all of them) and flip its record: a conductor starting under a name whose record
    is alive elsewhere asks that endpoint first (``accel.conductor.name_guard``).
    """
    with sessions() as session:
        record = session.scalar(select(Conductor).where(Conductor.name == name))
        if record is None or record.endpoint == endpoint:
            return None
        return (
            record.endpoint if conductor_alive(record.alive_until, record.last_seen, now) else None
        )
