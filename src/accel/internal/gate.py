"""The gate in front of every internal service: the deployment's token, then the
internal version a call is answered in.

Plain ASGI middleware, so that it costs little on every call: it refuses a caller
without the token (401) before anything else, then settles the internal version
(406 when it cannot), echoes it on the answer, and leaves it for the endpoints
(``request_version``, ``require``).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from accel.errors import VersionNotAcceptable
from accel.internal.auth import bearer_matches
from accel.internal.error_body import INTERNAL_ERRORS
from accel.internal.versions import (
    HEADER,
    OLDEST,
    Feature,
    Version,
    VersionRange,
    format_version,
)
from accel.web.headers import replace_headers

HEADER_NAME = HEADER.lower().encode()
# Paths anyone may read: what the service is and which versions it speaks.
OPEN_PATHS = ("/", "", "/openapi.json")


class InternalGate:
    """Authenticates every ``/v1`` call and settles its internal version."""

    def __init__(self, app: ASGIApp, token: str, versions: VersionRange) -> None:
        self.app = app
        self.token = token
        self.versions = versions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not bearer_matches(headers.get("authorization"), self.token):
            response = INTERNAL_ERRORS.response(401, "missing or wrong internal token")
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        try:
            version = self.versions.negotiate(headers.get(HEADER))
        except VersionNotAcceptable as exc:
            await INTERNAL_ERRORS.response(exc.status_code, exc.message, exc)(scope, receive, send)
            return
        scope.setdefault("state", {})["internal_version"] = version
        echoed = ((HEADER_NAME, format_version(version).encode()),)

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                replace_headers(message, echoed)
            await send(message)

        await self.app(scope, receive, send_with_version)


def request_version(request: Request) -> Version:
    """The internal version the gate settled for this request."""
    version: Version = request.scope.get("state", {}).get("internal_version", OLDEST)
    return version


def require(request: Request, feature: Feature, what: str, versions: VersionRange) -> None:
    """Refuses (406, with the range spoken) a call made in a version without ``feature``."""
    if not feature.spoken_in(request_version(request)):
        raise VersionNotAcceptable(
            f"{what} needs internal version {format_version(feature.since)}",
            versions.supported(),
        )
