"""Each conductor's record of itself, so the api finds a live conductor without a flag."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from accel.db.models import Conductor


def record_conductor(
    sessions: sessionmaker[Session], name: str, endpoint: str, now: dt.datetime
) -> None:
    try:
        with sessions.begin() as session:
            conductor = session.scalar(select(Conductor).where(Conductor.name == name))
            if conductor is None:
                session.add(Conductor(name=name, endpoint=endpoint, started_at=now, last_seen=now))
            else:
                conductor.endpoint = endpoint
                conductor.last_seen = now
    except IntegrityError:
        pass  # another process of the same name inserted it first; next round updates
