"""The one mapping from an error to an HTTP answer, for the public API and the internal
services alike.

Which status: accel's own errors carry theirs (accel.errors); Starlette's (an unknown
path, a method the path lacks) carry theirs; the database being away, whatever the
cause (accel.db.outage), is 503, so that clients retry and load balancers watching
``/healthz`` stop sending traffic. Anything else is a bug: 500 in the same JSON
shape, its traceback in the log, never a plain-text page.

What is logged: a bug's traceback (by the server, or here where no server sees it);
any other 5xx as one warning line per kind of error every ``LOG_INTERVAL_S``, since a
failing dependency fails every request and must not flood the log.

How the body looks is each API's own contract, an ``ErrorShape``: Cyborg's for the
public API (accel.api.failures), accel's for the internal one
(accel.internal.error_body). The mapping is applied with the same function by
Starlette's exception handlers (errors raised in a route), by ``Failures`` (errors
raised before routing) and by answers written outside the router
(accel.internal.direct_routes).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from accel.errors import AccelError, DatabaseUnavailable
from accel.log_limit import EveryFew

log = logging.getLogger(__name__)

LOG_INTERVAL_S = 10.0
# Expected failures, with an API's own ``ErrorShape.outage``; any other is a bug.
KNOWN: tuple[type[Exception], ...] = (AccelError, HTTPException)

BodyOf = Callable[[int, str, AccelError | None], dict[str, Any]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


@dataclass(frozen=True)
class ErrorShape:
    """How one API writes an error body; the status and the logging are not its say."""

    # The body for a status and message, and the accel error behind them if any (a
    # shape may say more of it: the problems of an InvalidInput, a version range).
    body_of: BodyOf
    # What a 500 for a bug says.
    bug_message: str
    # The foreign errors that mean the store behind this API is away (503):
    # accel.db.outage's for an API with a database. None for a node's daemons, which
    # so never load a database library.
    outage: tuple[type[Exception], ...] = ()

    @property
    def known(self) -> tuple[type[Exception], ...]:
        """The errors this API expects; any other is a bug."""
        return (*KNOWN, *self.outage)

    def response(self, status: int, message: str, error: AccelError | None = None) -> JSONResponse:
        return JSONResponse(self.body_of(status, message, error), status_code=status)

    def json(self, status: int, message: str) -> bytes:
        """The body as bytes, for answers written below the application (the
        protocol's refusals, accel.http_protocol)."""
        return bytes(self.response(status, message).body)


_logged: dict[type[AccelError], EveryFew] = {}


def as_accel_error(exc: Exception, outage: tuple[type[Exception], ...]) -> AccelError | None:
    """The accel error ``exc`` means, or None for a bug."""
    if isinstance(exc, AccelError):
        return exc
    if isinstance(exc, outage):
        if _due(DatabaseUnavailable):
            # The driver's own words, without the statement and its parameters.
            reason = getattr(exc, "orig", None) or exc
            log.warning("the database is unavailable: %s", str(reason).splitlines()[0])
        return DatabaseUnavailable()
    return None


def failure_response(exc: Exception, shape: ErrorShape, scope: Scope | None = None) -> Response:
    """The answer to ``exc`` in ``shape``; ``scope`` names the request in the log."""
    if isinstance(exc, HTTPException):
        response = shape.response(exc.status_code, str(exc.detail))
        # A 405 says which methods would do (RFC 9110 wants the Allow header).
        response.headers.update(exc.headers or {})
        return response
    error = as_accel_error(exc, shape.outage)
    if error is None:
        return shape.response(500, shape.bug_message)
    if error.status_code >= 500 and error is exc and _due(type(error)):
        where = f"{scope['method']} {scope['path']}" if scope else "a request"
        log.warning("%s failed: %s", where, error.message)
    return shape.response(error.status_code, error.message, error)


def _due(kind: type[AccelError]) -> bool:
    every = _logged.get(kind)
    if every is None:
        every = _logged[kind] = EveryFew(LOG_INTERVAL_S)
    return every.due()


def exception_handlers(shape: ErrorShape) -> dict[Any, Handler]:
    """Starlette's exception handlers, answering every exception in ``shape``. Starlette
    answers a handler keyed by Exception itself last, then lets the error on to the
    server's log."""

    async def on_error(request: Request, exc: Exception) -> Response:
        return failure_response(exc, shape, request.scope)

    return dict.fromkeys((*shape.known, Exception), on_error)


class Failures:
    """Answers an error raised anywhere inside it, if no answer has started yet."""

    def __init__(self, app: ASGIApp, shape: ErrorShape) -> None:
        self.app = app
        self.shape = shape

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
            await failure_response(exc, self.shape, scope)(scope, receive, send)
            if not isinstance(exc, self.shape.known):
                raise  # a bug: the server logs its traceback
