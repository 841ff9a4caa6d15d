"""Answering a few hot internal endpoints without Starlette's router.

A conductor's heartbeats are its most frequent call by far, and the router, its
exception middleware and the route's request wrapper were a large share of a heartbeat's
cost. An endpoint named here is called straight from the gate with the same
``Request``, and its errors get the same answers (accel.web.errors); any other path
or method (a 405 included) goes on to the application. Such an endpoint sees no
``request.app`` and no path parameters: only a fixed path with no use for them
belongs here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from accel.web.errors import ErrorShape, failure_response

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


class DirectRoutes:
    """Calls the endpoint of a (method, path) it knows; passes anything else on."""

    def __init__(
        self, app: ASGIApp, endpoints: Mapping[tuple[str, str], Endpoint], errors: ErrorShape
    ) -> None:
        self.app = app
        self.endpoints = dict(endpoints)
        self.errors = errors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (
            self.endpoints.get((scope["method"], scope["path"]))
            if scope["type"] == "http"
            else None
        )
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        try:
            response = await endpoint(Request(scope, receive))
        except Exception as exc:
            if not isinstance(exc, self.errors.known):
                # No server sees it: its traceback is logged here.
                log.exception("%s %s failed", scope["method"], scope["path"])
            response = failure_response(exc, self.errors, scope)
        await response(scope, receive, send)
