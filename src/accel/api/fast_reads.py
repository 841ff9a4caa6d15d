"""Cached reads answered before routing: the api's hottest GETs at the cost of a lookup.

Once a handler has rendered an answer into the ResponseCache (see accel.api.cache),
the same request is answered here, between authentication and Starlette's router:
the caller's roles are checked against the endpoint's policy rule, the generation
is read, and the stored body is sent. Anything else (a miss, a stale entry, a
caller the rule refuses, a path not listed) goes on to the app, whose handlers
give the full answer, errors included.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from accel.api.auth import RequestContext
from accel.api.cache import Rendered, ResponseCache, not_modified, request_key

UUID_LENGTH = 36
LISTS = {
    "/v2/devices": "cyborg:device:get_all",
    "/v2/deployables": "cyborg:deployable:get_all",
}
DEVICE_PREFIX = "/v2/devices/"
DEVICE_RULE = "cyborg:device:get_one"


def rule_for(path: str) -> str | None:
    """The policy rule of a cached endpoint, or None for any other path."""
    rule = LISTS.get(path)
    if rule is not None:
        return rule
    if path.startswith(DEVICE_PREFIX) and len(path) == len(DEVICE_PREFIX) + UUID_LENGTH:
        return DEVICE_RULE
    return None


class CachedReads:
    def __init__(
        self, app: ASGIApp, cache: ResponseCache, policy: dict[str, frozenset[str]]
    ) -> None:
        self.app = app
        self.cache = cache
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            rule = rule_for(scope["path"])
            caller: RequestContext | None = scope.get("state", {}).get("context")
            if (
                rule is not None
                and caller is not None
                and self.policy[rule] & set(caller.identity.roles)
            ):
                entry = await self.cache.fresh(request_key(scope))
                if entry is not None:
                    await _send(entry, scope, send)
                    return
        await self.app(scope, receive, send)


async def _send(entry: Rendered, scope: Scope, send: Send) -> None:
    etag = entry.etag.encode()
    if not_modified(Headers(scope=scope).get("if-none-match"), entry.etag):
        await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", etag)]})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [
        (b"content-length", str(len(entry.body)).encode()),
        (b"content-type", b"application/json"),
        (b"etag", etag),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": entry.body})
