"""A component's internal HTTP service: its routes behind the gate, plus ``GET /``,
``/openapi.json`` and ``/metrics``.

Agents and drivers serve routes built once per process (``service_route``): their
endpoints find their service in the app's state, so the services of one kind in a
process (a node's built-in drivers, the simulator's thousands of nodes) share one
set of route objects instead of building their own (docs/benchmarks.md, issue 25).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

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

Service = TypeVar("Service")


async def _root(request: Request) -> Response:
    return JSONResponse(request.app.state.root)


async def _openapi(request: Request) -> Response:
    return JSONResponse(document(request.app.state.component))


# Every internal app's, built once per process; each app's state says what they answer.
COMMON_ROUTES = (
    Route("/", _root, methods=["GET"]),
    Route("/openapi.json", _openapi, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
)


def service_route(
    path: str,
    endpoint: Callable[[Service, Request], Awaitable[Response]],
    methods: list[str],
) -> Route:
    """A route whose ``endpoint`` (a method of the service's class) is called on the
    service of the app serving the request (``internal_app``'s ``service``)."""

    async def on_service(request: Request) -> Response:
        service: Service = request.app.state.service
        return await endpoint(service, request)

    return Route(path, on_service, methods=methods)


def internal_app(
    component: str,
    routes: Sequence[BaseRoute],
    token: str,
    versions: VersionRange,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    extra_root: Mapping[str, Any] | None = None,
    direct: Collection[str] = (),
    errors: ErrorShape = INTERNAL_ERRORS,
    service: object = None,
) -> ASGIApp:
    """The service; the routes whose paths are in ``direct`` are answered by
    ``DirectRoutes``. ``errors``: INTERNAL_ERRORS with its ``outage`` for a service
    with a database. ``service``: what the ``service_route`` routes are called on."""

    starlette = Starlette(
        routes=[*COMMON_ROUTES, *routes],
        exception_handlers=exception_handlers(errors),
        lifespan=lifespan,
    )
    starlette.state.component = component
    starlette.state.root = {
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
    starlette.state.service = service
    app: ASGIApp = starlette
    endpoints = {
        (method, route.path): route.endpoint
        for route in routes
        if isinstance(route, Route) and route.path in direct
        for method in route.methods or ()
    }
    if endpoints:
        app = DirectRoutes(app, endpoints, errors)
    return RequestTimer(InternalGate(app, token, versions), component)
