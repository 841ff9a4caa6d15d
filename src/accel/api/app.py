"""The public API application: Cyborg's v2 and accel's additions, from the database.

Layers, outermost first: every error becomes Cyborg's error body (accel.api.failures,
its status chosen by accel.web.errors); the ``/accelerator`` prefix that OpenStack
service catalogs use is stripped, so every route is served at both roots;
microversions; who is calling; a trailing slash dropped; the cached reads
(accel.api.fast_reads, built from the route table's CachedRead routes); then the
routes (``ROUTES``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from accel.api import (
    accelerator_requests,
    deployables,
    device_profiles,
    devices,
    fleet,
    hardware_health,
    operations,
    placement,
    ui,
)
from accel.api.auth import Authentication, AuthMode, Identity, Resolver, tokens_resolver
from accel.api.cache import GenerationWatch, ResponseCache
from accel.api.failures import CYBORG_ERRORS, HANDLERS, Failures
from accel.api.fast_reads import CachedReads
from accel.api.fleet_gauges import fleet_metrics
from accel.api.health import healthz
from accel.api.keystone import KeystoneValidator
from accel.api.microversions import Microversions
from accel.api.openapi import openapi
from accel.api.openstack import root, v2_root
from accel.api.policy import RULES
from accel.api.queries import Reader, Writer
from accel.db.engine import migrate, session_factory
from accel.internal.client import InternalClient
from accel.internal.tls import TlsFiles
from accel.internal.versions import VersionRange
from accel.metrics import RequestTimer

log = logging.getLogger(__name__)

CATALOG_PREFIX = "/accelerator"


@dataclass(frozen=True)
class ApiSettings:
    auth: AuthMode = "token"
    tokens: dict[str, Identity] = field(default_factory=dict)
    tokens_file: Path | None = None
    keystone_url: str | None = None
    # The deployment's internal token, to ask conductors to bind; None: binds are 503.
    internal_token: str | None = None
    policy: dict[str, frozenset[str]] = field(default_factory=lambda: dict(RULES))
    # Client certificate material for calling conductors over mutual TLS.
    tls: TlsFiles | None = None


class CatalogPrefix:
    """Serves ``/accelerator/...`` as ``/...``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and (
            path == CATALOG_PREFIX or path.startswith(CATALOG_PREFIX + "/")
        ):
            scope = {
                **scope,
                "path": path[len(CATALOG_PREFIX) :] or "/",
                "root_path": scope.get("root_path", "") + CATALOG_PREFIX,
            }
        await self.app(scope, receive, send)


class TrailingSlash:
    """A path with a trailing slash is the path without it, never a redirect.

    Cyborg (pecan) serves a collection read with a trailing slash as without one,
    and answers 400 to a DELETE with one: the slash names an empty key (Nova and
    cyborg-tempest-plugin rely on that 400). Other methods are served as on the
    path without the slash. ``/`` and ``/v2/`` are routes of their own.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and path.endswith("/") and path not in ("/", "/v2/"):
            if scope["method"] == "DELETE":
                await CYBORG_ERRORS.response(
                    400, f"DELETE {path} names no resource: name it without the trailing slash"
                )(scope, receive, send)
                return
            scope = {**scope, "path": path[:-1]}
        await self.app(scope, receive, send)


# The one route table; its CachedRead routes are also answered before routing.
ROUTES: list[BaseRoute] = [
    Route("/", root, methods=["GET"]),
    Route("/v2", v2_root, methods=["GET"]),
    Route("/v2/", v2_root, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/metrics", fleet_metrics, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    *devices.routes,
    *device_profiles.routes,
    *deployables.routes,
    *accelerator_requests.routes,
    *fleet.routes,
    *hardware_health.routes,
    *operations.routes,
    *placement.routes,
    *ui.routes,
]


def create_app(engine: Engine, settings: ApiSettings) -> ASGIApp:
    keystone = None
    resolver: Resolver | None = None
    if settings.auth == "token":
        resolver = tokens_resolver(settings.tokens)
    elif settings.auth == "keystone":
        if settings.keystone_url is None:
            raise ValueError("--auth keystone needs --keystone-url")
        keystone = KeystoneValidator(settings.keystone_url)
        resolver = keystone.identity

    # Rendered answers for the hottest reads, served before routing once rendered.
    cache = ResponseCache()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(migrate, engine)
        sessions = session_factory(engine)
        app.state.reader = Reader(sessions, engine)
        app.state.writer = Writer(sessions, engine)
        app.state.policy = settings.policy
        watch = GenerationWatch(engine)
        cache.watch = watch
        app.state.cache = cache
        app.state.internal_client = None
        if settings.internal_token is not None:
            app.state.internal_client = InternalClient(
                settings.internal_token, VersionRange(), tls=settings.tls
            )
        try:
            yield
        finally:
            if app.state.internal_client is not None:
                await app.state.internal_client.aclose()
            if keystone is not None:
                await keystone.aclose()
            app.state.writer.close()
            watch.close()
            engine.dispose()

    app = Starlette(routes=ROUTES, exception_handlers=HANDLERS, lifespan=lifespan)
    # Its redirects would be built from the Host header and lose the catalog prefix.
    app.router.redirect_slashes = False
    served = CachedReads(app, cache, settings.policy)
    return RequestTimer(
        Failures(CatalogPrefix(Microversions(Authentication(TrailingSlash(served), resolver)))),
        "api",
    )
