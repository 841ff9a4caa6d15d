"""How the api reaches a conductor for what only a conductor may do (binds, setup).

No flag names a conductor: each records its endpoint in the database and keeps it
fresh; the api tries the freshest ones in turn, each call with a timeout.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request

from accel.api.queries import reader
from accel.db.models import Conductor, utcnow
from accel.errors import PeerError, PeerRefused, PeerTooOld, Unavailable
from accel.internal.client import InternalClient
from accel.internal.schemas import ArqChanges, ArqOutcome
from accel.internal.setup_schemas import OperationRequest, OperationView

log = logging.getLogger(__name__)

LIVE_WITHIN = dt.timedelta(seconds=60)
Answer = TypeVar("Answer")


def live_conductors(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(Conductor.endpoint)
            .where(Conductor.last_seen >= utcnow() - LIVE_WITHIN)
            .order_by(Conductor.last_seen.desc())
        )
    )


async def ask_conductor(
    request: Request, what: str, call: Callable[[InternalClient, str], Awaitable[Answer]]
) -> Answer:
    """``call`` on the freshest live conductor that answers; a refusal is an answer.

    A conductor that cannot be reached, or is too old for the call, is passed over
    for the next; one that refuses (a 4xx) speaks for all of them, and its status
    and reason reach the caller.
    """
    client: InternalClient | None = request.app.state.internal_client
    if client is None:
        raise Unavailable(
            "this api has no internal token (--internal-token-file or "
            f"ACCEL_INTERNAL_TOKEN), so it cannot ask a conductor to {what}"
        )
    endpoints = await reader(request).run(live_conductors)
    if not endpoints:
        raise Unavailable("no conductor has reported in during the last minute")
    failures = []
    for endpoint in endpoints:
        try:
            return await call(client, endpoint)
        except PeerTooOld as exc:
            failures.append(f"{endpoint}: {exc.message}")
        except PeerRefused:
            raise
        except PeerError as exc:
            log.warning("conductor %s could not %s: %s", endpoint, what, exc)
            # One that wraps a foreign error (the transport's, a parser's) speaks in
            # that library's words and class names: those go to the log only.
            failures.append(f"{endpoint}: no usable answer" if exc.__cause__ else exc.message)
    raise Unavailable(f"no conductor could {what} ({'; '.join(failures)}); the api's log says why")


async def change_arqs(request: Request, changes: ArqChanges) -> list[ArqOutcome]:
    async def bind(client: InternalClient, endpoint: str) -> list[ArqOutcome]:
        return (await client.change_arqs(endpoint, changes)).arqs

    return await ask_conductor(request, "bind", bind)


async def request_operation(request: Request, asked: OperationRequest) -> OperationView:
    async def start(client: InternalClient, endpoint: str) -> OperationView:
        return await client.request_operation(endpoint, asked)

    return await ask_conductor(request, "start a setup operation", start)
