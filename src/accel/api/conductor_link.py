"""How the api reaches a conductor for what only a conductor may do (binds).

No flag names a conductor: each records its endpoint in the database and keeps it
fresh; the api tries the freshest ones in turn, each call with a timeout.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request

from accel.api.queries import reader
from accel.db.models import Conductor, utcnow
from accel.errors import PeerError, Unavailable
from accel.internal.client import InternalClient
from accel.internal.schemas import ArqChanges, ArqOutcome

log = logging.getLogger(__name__)

LIVE_WITHIN = dt.timedelta(seconds=60)


def live_conductors(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(Conductor.endpoint)
            .where(Conductor.last_seen >= utcnow() - LIVE_WITHIN)
            .order_by(Conductor.last_seen.desc())
        )
    )


async def change_arqs(request: Request, changes: ArqChanges) -> list[ArqOutcome]:
    client: InternalClient | None = request.app.state.internal_client
    if client is None:
        raise Unavailable(
            "this api has no internal token (--internal-token-file or "
            "ACCEL_INTERNAL_TOKEN), so it cannot ask a conductor to bind"
        )
    endpoints = await reader(request).run(live_conductors)
    if not endpoints:
        raise Unavailable("no conductor has reported in during the last minute")
    failures = []
    for endpoint in endpoints:
        try:
            return (await client.change_arqs(endpoint, changes)).arqs
        except PeerError as exc:
            log.warning("conductor %s could not bind: %s", endpoint, exc)
            failures.append(str(exc))
    raise Unavailable("no conductor could bind: " + "; ".join(failures))
