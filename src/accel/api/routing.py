"""The kinds of route in the api's one route table (accel.api.app.ROUTES).

``resource``: one route per path, dispatching by method: a 405 then lists every
method the path has in its ``Allow`` header, as RFC 9110 asks (one Starlette route
per method would list only the first route's).

``CachedRead``: a GET whose answers the ResponseCache keeps (accel.api.cache), with
the policy rule that guards it, declared once. The route checks that rule on a
routed request; accel.api.fast_reads, built from the table's CachedRead routes when
the app is made, answers a repeated request before routing, and shows an entry only
to callers the same rule lets through, checked by the same function.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from accel.api.cache import Render, cache
from accel.api.policy import authorize

Handler = Callable[[Request], Awaitable[Response]]
# A cached read's handler: checks the request (a 4xx raised here is never cached)
# and says how to render its answer.
Prepare = Callable[[Request], Render]


def resource(path: str, **handlers: Handler) -> Route:
    """``resource("/v2/things", get=list_things, post=create_thing)``."""
    by_method = {method.upper(): handler for method, handler in handlers.items()}

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await by_method[method](request)

    return Route(path, dispatch, methods=list(by_method))


class CachedRead(Route):
    """``CachedRead("/v2/devices", "cyborg:device:get_all", list_devices)``."""

    def __init__(self, path: str, rule: str, prepare: Prepare) -> None:
        super().__init__(path, prepare, methods=["GET"])
        self.rule = rule
        self.prepare = prepare
        # An ASGI app, not a request handler: the answer goes out as the cache holds
        # it (Rendered.send), the same messages as from the fast path.
        self.app = self._serve

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        authorize(request, self.rule)
        render = self.prepare(request)
        entry = await cache(request).rendered(scope, self.rule, render)
        await entry.send(scope, send)
