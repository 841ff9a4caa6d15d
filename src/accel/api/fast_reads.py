"""Cached reads answered before routing: the api's hottest GETs at the cost of a lookup.

Once a CachedRead route (accel.api.routing) has rendered an answer into the
ResponseCache, the same request is answered here, between authentication and
Starlette's router: the stored entry is looked up, the caller's roles are checked
against the rule of the route that rendered it (accel.api.policy.permits, as the
route does), the generation is read, and the entry is sent as the route sends it
(Rendered.send). Anything else (a miss, a stale entry, a caller the rule refuses, a
path no CachedRead serves) goes on to the app, whose routes give the full answer.
It sits inside the app's one error handling (accel.api.failures): a database that
is away while the generation is read is a 503 like anywhere else.

Which paths may have entries is read from the route table once, when the app is
made, so that other requests pay no more than a set look-up.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from accel.api.auth import RequestContext
from accel.api.cache import ResponseCache, request_key
from accel.api.policy import permits
from accel.api.routing import CachedRead


class CachedReads:
    def __init__(
        self, app: Starlette, cache: ResponseCache, policy: Mapping[str, frozenset[str]]
    ) -> None:
        self.app: ASGIApp = app
        self.cache = cache
        self.policy = policy
        cached = [route.path for route in app.routes if isinstance(route, CachedRead)]
        self.paths = frozenset(path for path in cached if "{" not in path)
        # A path with parameters, by what comes before its first one: a request that
        # matches only this far is looked up and missed, never answered wrongly.
        self.prefixes = tuple(path[: path.index("{")] for path in cached if "{" in path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            caller: RequestContext | None = scope.get("state", {}).get("context")
            if caller is not None and (path in self.paths or path.startswith(self.prefixes)):
                key = request_key(scope)
                entry = self.cache.stored(key)
                if (
                    entry is not None
                    and permits(self.policy, caller, entry.rule)
                    and await self.cache.is_current(entry)
                ):
                    await entry.send(scope, send)
                    return
        await self.app(scope, receive, send)
