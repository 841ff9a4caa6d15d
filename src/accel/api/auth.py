"""Who is calling the public API: ``noauth`` for development, or a tokens file.

Under ``noauth`` every caller is an admin, so requests a browser sends from a page
of another site (a foreign ``Origin``) are refused (403).

Callers send ``X-Auth-Token`` as OpenStack clients do. A service acting for a user
(Nova binding a user's ARQs) adds its own token as ``X-Service-Token``, checked by the
same resolver; its roles are the request's service roles, which the policy's
``service_roles:NAME`` checks read (keystonemiddleware's convention). Under
``noauth`` every caller is also the service. The version documents at ``/`` and
``/v2`` answer anyone, as in Cyborg.

``/metrics`` also takes the token as ``Authorization: Bearer <token>``: that is the
one credential a Prometheus scrape can send from a file (2.42 cannot send
``X-Auth-Token``). The token is resolved by the same resolver and the route's policy
is the same; ``X-Auth-Token`` wins when both are sent. Nowhere else: the API stays
OpenStack's, one header for one token.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from accel.api.failures import CYBORG_ERRORS
from accel.errors import AccelError, Unauthorized

log = logging.getLogger(__name__)

AuthMode = Literal["noauth", "token", "keystone"]
Role = Literal["admin", "manager", "member", "reader", "service"]
KNOWN_ROLES = frozenset(("admin", "manager", "member", "reader", "service"))
PUBLIC_PATHS = frozenset(
    {
        "/openapi.json",
        "/healthz",
        "",
        "/",
        "/v2",
        "/v2/",
        "/v2.json",
        "/accelerator",
        "/accelerator/",
        "/accelerator/v2",
        "/accelerator/v2/",
    }
)

# The fleet page (accel.api.ui): a browser's navigation carries no token, so a request
# here without one goes on without a caller; the page then answers 401 with its frame
# and a token form, no data, and its script and style files are public.
PAGE_PREFIX = "/ui"
# Prometheus's scrape (see the module's docstring).
BEARER_PATHS = frozenset({"/metrics"})


class Identity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: str
    project_id: str
    roles: tuple[Role, ...]


@dataclass(frozen=True)
class RequestContext:
    identity: Identity
    # The roles of the X-Service-Token's owner; empty without a service token.
    service_roles: tuple[Role, ...] = ()

    @property
    def is_admin(self) -> bool:
        return "admin" in self.identity.roles

    @cached_property
    def credentials(self) -> frozenset[str]:
        """What policy checks match: the roles, and ``service_roles:NAME`` per service role."""
        return frozenset(self.identity.roles).union(
            f"service_roles:{role}" for role in self.service_roles
        )


DEVELOPER = Identity(user_id="noauth", project_id="noauth", roles=("admin",))
# Without tokens there is no telling Nova from anyone: everyone may do what Nova does.
DEVELOPER_CONTEXT = RequestContext(DEVELOPER, service_roles=("service",))


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A configuration file holding one JSON object; ValueError saying what is wrong."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"{what} {path} must hold a JSON object")
    return document


def load_tokens(path: Path) -> dict[str, Identity]:
    """The tokens file: a JSON object mapping each token to its identity."""
    document = read_json_object(path, "tokens file")
    try:
        return {token: Identity.model_validate(identity) for token, identity in document.items()}
    except ValidationError as exc:
        raise ValueError(f"tokens file {path}: {exc}") from exc


Resolver = Callable[[str], Awaitable[Identity | None]]


def tokens_resolver(tokens: dict[str, Identity]) -> Resolver:
    async def resolve(token: str) -> Identity | None:
        return tokens.get(token)

    return resolve


def foreign_origin(scope: Scope) -> str | None:
    """The request's Origin if a browser sent it from a page of another site, else None.

    Without tokens, any web page a developer opens could otherwise POST to a local
    api (a form or fetch() needs no CORS preflight for a "simple" request). Pages
    from loopback and from this api's own address are local. A request without
    Origin is not a browser's cross-site one (browsers send it on every POST, PATCH,
    DELETE and cross-site fetch).
    """
    origin = Headers(scope=scope).get("origin")
    if origin is None:
        return None
    host = urlsplit(origin).hostname
    if host is not None:
        if host == "localhost":
            return None
        try:
            if ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            pass
        server = scope.get("server")
        if server is not None and host == str(server[0]).lower():
            return None
    return origin


def bearer_token(headers: Headers) -> str | None:
    """The credential of ``Authorization: Bearer <token>`` (the scheme's name is
    case-insensitive, RFC 9110); None for any other scheme or none."""
    scheme, _, credential = headers.get("authorization", "").partition(" ")
    credential = credential.strip()
    return credential if scheme.lower() == "bearer" and credential else None


class Authentication:
    """Finds who calls (``resolve`` maps a token to an identity); None means noauth."""

    def __init__(self, app: ASGIApp, resolve: Resolver | None) -> None:
        self.app = app
        self.resolve = resolve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.resolve is None:
            origin = foreign_origin(scope)
            if origin is not None:
                await CYBORG_ERRORS.response(
                    403,
                    f"cross-site request refused: Origin {origin} is neither loopback nor this"
                    " api, and --auth noauth serves local callers only",
                )(scope, receive, send)
                return
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        if self.resolve is None:
            context: RequestContext | None = DEVELOPER_CONTEXT
        else:
            headers = Headers(scope=scope)
            path: str = scope["path"]
            if not headers.get("x-auth-token") and (
                path == PAGE_PREFIX or path.startswith(PAGE_PREFIX + "/")
            ):
                await self.app(scope, receive, send)
                return
            try:
                context = await self._context(headers, path)
            except AccelError as exc:
                await CYBORG_ERRORS.response(exc.status_code, exc.message)(scope, receive, send)
                return
        if context is None:
            await CYBORG_ERRORS.response(401, "authentication required: send a valid X-Auth-Token")(
                scope, receive, send
            )
            return
        scope.setdefault("state", {})["context"] = context
        await self.app(scope, receive, send)

    async def _context(self, headers: Headers, path: str) -> RequestContext | None:
        """The caller's context, None without a valid token; Unauthorized for a service
        token that is not valid (keystonemiddleware refuses those too)."""
        assert self.resolve is not None
        token = headers.get("x-auth-token")
        if not token and path in BEARER_PATHS:
            token = bearer_token(headers)
        identity = await self.resolve(token) if token else None
        if identity is None:
            return None
        service_token = headers.get("x-service-token")
        if service_token is None:
            return RequestContext(identity)
        service = await self.resolve(service_token) if service_token else None
        if service is None:
            raise Unauthorized("the X-Service-Token is not valid")
        return RequestContext(identity, service_roles=service.roles)
