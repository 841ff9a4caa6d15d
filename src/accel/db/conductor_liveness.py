"""When a conductor counts as alive, and which conductors the api asks: the rules the
fleet page, a starting conductor (is its name held?), the conductors' takeover of
each other's setup operations and the api all apply.

A conductor vouches for itself in its record: ``alive_until``, a few of its
heartbeats ahead (accel.conductor.presence). A record written by a release from
before ``alive_until`` existed is judged by its ``last_seen``, within LIVE_WITHIN.

The api asks more widely (``worth_asking``): any conductor seen within LIVE_WITHIN,
freshest first, whatever its vouch says. A conductor whose record lapsed because its
writes failed for a while (a full disk, the database away) answers binds again as
soon as they work, before its next record; asking a dead one costs a refused
connection, while skipping a live one would fail the bind.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, and_, or_

from accel.db.models import Conductor

# For a record without ``alive_until``: older releases recorded themselves at every
# heartbeat, and no heartbeat interval was ever longer.
LIVE_WITHIN = dt.timedelta(seconds=60)


def conductor_alive(
    alive_until: dt.datetime | None, last_seen: dt.datetime, now: dt.datetime
) -> bool:
    """Whether a conductor's record still vouches for it at ``now``."""
    return (alive_until or last_seen + LIVE_WITHIN) >= now


def alive_at(now: dt.datetime) -> ColumnElement[bool]:
    """``conductor_alive`` as a condition on ``conductors`` rows, for queries; never
    NULL, so that its negation finds the dead ones too."""
    return or_(
        and_(Conductor.alive_until.is_not(None), Conductor.alive_until >= now),
        and_(Conductor.alive_until.is_(None), Conductor.last_seen >= now - LIVE_WITHIN),
    )


def worth_asking(now: dt.datetime) -> ColumnElement[bool]:
    """Conductors the api may ask at ``now``: seen within LIVE_WITHIN."""
    return Conductor.last_seen >= now - LIVE_WITHIN
