"""How the public API answers when something fails: the one mapping from an error to
an HTTP status and Cyborg's error body.

accel's own errors carry their status (accel.errors); Starlette's (an unknown path,
a method the path lacks) carry theirs; the database being away, whatever the cause
(accel.db.outage), is 503, so that clients retry and load balancers watching
``/healthz`` stop sending traffic. Anything else is a bug: 500 in the same JSON
shape, its traceback in the log, never a plain-text page.

The mapping is applied at two points with the same function: Starlette's exception
handlers, for errors raised in a route, and the ``Failures`` layer around the whole
app, for errors raised before routing (cached reads, authentication).
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from accel.api.openstack import error_response
from accel.db.outage import DATABASE_AWAY
from accel.errors import AccelError, DatabaseUnavailable
from accel.log_limit import EveryFew

log = logging.getLogger(__name__)

# An outage fails every request; one line per interval says so without flooding.
OUTAGE_LOG_INTERVAL_S = 10.0
_outage_logged = EveryFew(OUTAGE_LOG_INTERVAL_S)


def as_accel_error(exc: Exception) -> AccelError | None:
    """The accel error ``exc`` means, or None for a bug."""
    if isinstance(exc, AccelError):
        return exc
    if isinstance(exc, DATABASE_AWAY):
        _note_outage(exc)
        return DatabaseUnavailable()
    return None


def _note_outage(exc: Exception) -> None:
    if _outage_logged.due():
        # The driver's own words, without the statement and its parameters.
        reason = getattr(exc, "orig", None) or exc
        log.warning("the database is unavailable: %s", str(reason).splitlines()[0])


def failure_response(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        response = error_response(exc.status_code, str(exc.detail))
        # A 405 says which methods would do (RFC 9110 wants the Allow header).
        response.headers.update(exc.headers or {})
        return response
    error = as_accel_error(exc)
    if error is None:
        return error_response(500, "internal error; the api's log has the details")
    return error_response(error.status_code, error.message)


async def on_error(request: Request, exc: Exception) -> Response:
    """Starlette's exception handler for every class the mapping knows."""
    return failure_response(exc)


# Expected failures; any other exception is a bug. Starlette answers a handler keyed
# by Exception itself last, then lets the error on to the server's log.
KNOWN: tuple[type[Exception], ...] = (AccelError, HTTPException, *DATABASE_AWAY)
HANDLERS = dict.fromkeys((*KNOWN, Exception), on_error)


class Failures:
    """Answers an error raised anywhere inside it, if no answer has started yet."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if started:
                raise
            await failure_response(exc)(scope, receive, send)
            if not isinstance(exc, KNOWN):
                raise  # a bug: the server logs its traceback
