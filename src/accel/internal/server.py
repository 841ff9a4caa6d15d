"""A component's internal HTTP service: its routes behind the gate, plus ``GET /``,
``/openapi.json`` and ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from accel.internal.direct_routes import DirectRoutes
from accel.internal.error_body import INTERNAL_ERRORS
from accel.internal.gate import InternalGate
from accel.internal.openapi import document
from accel.internal.versions import VersionRange, format_version
from accel.metrics import RequestTimer, metrics
from accel.web.errors import ErrorShape, exception_handlers


def internal_app(
    component: str,
    routes: Sequence[BaseRoute],
    token: str,
    versions: VersionRange,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    extra_root: Mapping[str, Any] | None = None,
    direct: Collection[str] = (),
    errors: ErrorShape = INTERNAL_ERRORS,
) -> ASGIApp:
    """The service; the routes whose paths are in ``direct`` are answered by
    ``DirectRoutes``. ``errors``: INTERNAL_ERRORS with its ``outage`` for a service
    with a database."""

    async def root(request: Request) -> Response:
        return JSONResponse(
            {
                "component": component,
                "versions": [
                    {
                        "id": "v1",
                        "status": "CURRENT",
                        "min_version": format_version(versions.minimum),
                        "max_version": format_version(versions.maximum),
                    }
                ],
                **(extra_root or {}),
            }
        )

    async def openapi(request: Request) -> Response:
        return JSONResponse(document(component))

    app: ASGIApp = Starlette(
        routes=[
            Route("/", root, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *routes,
        ],
        exception_handlers=exception_handlers(errors),
        lifespan=lifespan,
    )
    endpoints = {
        (method, route.path): route.endpoint
        for route in routes
        if isinstance(route, Route) and route.path in direct
        for method in route.methods or ()
    }
    if endpoints:
        app = DirectRoutes(app, endpoints, errors)
    return RequestTimer(InternalGate(app, token, versions), component)
