"""What every internal HTTP service shares: the gate, errors, bodies, the version list.

The gate is plain ASGI middleware so it costs little on every call: it refuses a
caller without the deployment's token (401) before anything else, then settles the
internal version (406 when it cannot) and echoes it on the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from accel.errors import (
    AccelError,
    FieldProblem,
    InvalidInput,
    TooLarge,
    UnsupportedMediaType,
    VersionNotAcceptable,
)
from accel.internal.auth import bearer_matches
from accel.internal.json_bodies import NotJson, is_json_media_type, loads
from accel.internal.openapi import document
from accel.internal.versions import HEADER, Version, VersionRange, format_version
from accel.metrics import RequestTimer, metrics

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
HEADER_NAME = HEADER.lower().encode()
Body = TypeVar("Body", bound=BaseModel)


class InternalGate:
    """Authenticates every ``/v1`` call and settles its internal version."""

    def __init__(self, app: ASGIApp, token: str, versions: VersionRange) -> None:
        self.app = app
        self.token = token
        self.versions = versions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in ("/", "", "/openapi.json"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not bearer_matches(headers.get("authorization"), self.token):
            response = error_response(401, "missing or wrong internal token")
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        try:
            version = self.versions.negotiate(headers.get(HEADER))
        except VersionNotAcceptable as exc:
            await handle_accel_error_asgi(exc, scope, receive, send)
            return
        scope.setdefault("state", {})["internal_version"] = version
        echoed = ((HEADER_NAME, format_version(version).encode()),)

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                replace_headers(message, echoed)
            await send(message)

        await self.app(scope, receive, send_with_version)


def replace_headers(start: Message, pairs: Sequence[tuple[bytes, bytes]]) -> None:
    """Puts ``pairs`` (lower-case names, as ASGI has them) in a response start message,
    in place of any headers of the same names: one pass over the list, where
    MutableHeaders scans and re-encodes it for every header set (in the profile of a
    cached api read, and of a heartbeat)."""
    names = {name for name, _ in pairs}
    kept = [pair for pair in start.get("headers", ()) if pair[0].lower() not in names]
    start["headers"] = [*kept, *pairs]


def request_version(request: Request) -> Version:
    """The internal version the gate settled for this request."""
    version: Version = request.scope.get("state", {}).get("internal_version", (1, 0))
    return version


def require_version(request: Request, version: Version, what: str, versions: VersionRange) -> None:
    """Refuses (406, with the range spoken) a call made in a version too old for it."""
    if request_version(request) < version:
        raise VersionNotAcceptable(
            f"{what} needs internal version {format_version(version)}", versions.supported()
        )


Endpoint = Callable[[Request], Awaitable[Response]]


class DirectRoutes:
    """Answers a few hot endpoints without Starlette's router and exception layers.

    A conductor's heartbeats are its most frequent call by far, and the router, its
    exception middleware and the route's request wrapper were a large share of a
    heartbeat's cost. An endpoint named here is called straight from the gate with
    the same ``Request``, and its errors get the same JSON bodies; any other path or
    method (a 405 included) goes on to the application. Such an endpoint sees no
    ``request.app`` and no path parameters: only a fixed path with no use for them
    belongs here.
    """

    def __init__(self, app: ASGIApp, endpoints: Mapping[tuple[str, str], Endpoint]) -> None:
        self.app = app
        self.endpoints = dict(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (
            self.endpoints.get((scope["method"], scope["path"]))
            if scope["type"] == "http"
            else None
        )
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except AccelError as exc:
            response = await _on_accel_error(request, exc)
        except Exception:
            # As Starlette's ServerErrorMiddleware would, with accel's error body.
            log.exception("%s %s failed", scope["method"], scope["path"])
            response = error_response(500, "internal error")
        await response(scope, receive, send)


def error_response(
    status: int, message: str, problems: Sequence[FieldProblem] = (), **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"error": message, **extra}
    if problems:
        body["problems"] = [{"field": p.field, "message": p.message} for p in problems]
    return JSONResponse(body, status_code=status)


def error_json(status: int, message: str) -> bytes:
    """The internal error body as bytes, for answers written below the application (the
    protocol's refusals, accel.http_protocol)."""
    return bytes(error_response(status, message).body)


def accel_error_response(exc: AccelError) -> JSONResponse:
    if isinstance(exc, VersionNotAcceptable):
        return error_response(
            exc.status_code,
            exc.message,
            min_version=exc.supported.minimum,
            max_version=exc.supported.maximum,
        )
    problems = exc.problems if isinstance(exc, InvalidInput) else []
    return error_response(exc.status_code, exc.message, problems)


async def handle_accel_error_asgi(
    exc: AccelError, scope: Scope, receive: Receive, send: Send
) -> None:
    await accel_error_response(exc)(scope, receive, send)


async def _on_accel_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AccelError)
    if exc.status_code >= 500:
        log.warning("%s %s failed: %s", request.method, request.url.path, exc.message)
    return accel_error_response(exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = error_response(exc.status_code, str(exc.detail))
    # A 405 says which methods would do (RFC 9110 wants the Allow header).
    response.headers.update(exc.headers or {})
    return response


def validation_problems(exc: ValidationError) -> list[FieldProblem]:
    return [
        FieldProblem(".".join(str(part) for part in error["loc"]) or "body", error["msg"])
        for error in exc.errors()
    ]


def problems_text(problems: Sequence[FieldProblem]) -> str:
    """The problems in one line, for an error's message (the list goes beside it)."""
    return "; ".join(f"{p.field}: {p.message}" for p in problems)


def refuse_nul(document: Any, where: str = "body") -> None:
    """NUL characters in text are refused: PostgreSQL cannot store them, nobody needs them."""
    if isinstance(document, str):
        if "\x00" in document:
            raise InvalidInput(f"{where} contains a NUL character")
    elif isinstance(document, dict):
        for key, value in document.items():
            refuse_nul(key, where)
            refuse_nul(value, f"{where}.{key}")
    elif isinstance(document, list):
        for index, value in enumerate(document):
            refuse_nul(value, f"{where}[{index}]")


async def read_json(request: Request) -> Any:
    """The request's JSON document: 415 unless labelled JSON, 413 over the size limit,
    400 when it is not JSON, is nested too deep or carries NUL characters. Every body
    accel takes, public or internal, comes here or through ``read_body``."""
    return _parse_json(await _read_raw(request))


async def _read_raw(request: Request) -> bytes:
    """The request's body, or TooLarge past the limit (refused on its declared size
    before it is read, where it declares one)."""
    content_type = request.headers.get("content-type")
    if not is_json_media_type(content_type):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {content_type or 'missing'}"[:200]
        )
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise TooLarge(f"body is larger than {MAX_BODY_BYTES} bytes")
    # Read piece by piece: a chunked body declares no size, and is refused as soon as
    # it passes the limit rather than once all of it is held in memory.
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise TooLarge(f"body is larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
    except ClientDisconnect as exc:
        # The client went, or the server closed a body that did not arrive in time
        # (accel.http_protocol): nobody is left to answer, but the request ends as
        # a refusal rather than an error in the log.
        raise InvalidInput("the body did not arrive: the connection closed") from exc
    return b"".join(chunks)


def _parse_json(raw: bytes) -> Any:
    try:
        document = loads(raw)
    except NotJson as exc:
        raise InvalidInput(f"body is {exc}") from exc
    refuse_nul(document)
    return document


async def read_body(request: Request, model: type[Body]) -> Body:
    """The request's JSON body checked against ``model``, or InvalidInput naming the field.

    A body that is valid and holds no NUL is parsed and checked in one pass by
    pydantic's own JSON parser, cheaper than ``json.loads`` and a check of the
    objects it built (this is every heartbeat). Anything else takes the long way,
    which names what is wrong as it always has.
    """
    raw = await _read_raw(request)
    if b"\\u0000" not in raw and b"\x00" not in raw:
        try:
            return model.model_validate_json(raw)
        except ValidationError:
            pass
    document = _parse_json(raw)
    if not isinstance(document, dict):
        raise InvalidInput("body must be a JSON object")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        problems = validation_problems(exc)
        named = ", ".join(p.field for p in problems)
        raise InvalidInput(f"invalid {model.__name__}: {named}", problems) from exc


def only_query(request: Request, allowed: tuple[str, ...] = ()) -> None:
    """Refuses query parameters the endpoint does not know (400 naming them)."""
    if not request.scope.get("query_string"):
        return
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        raise InvalidInput(f"unknown query parameter(s): {', '.join(unknown)}")


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within bounds, or InvalidInput."""
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError as exc:
        raise InvalidInput(f"query parameter {name} must be an integer") from exc
    if not low <= value <= high:
        raise InvalidInput(f"query parameter {name} must be between {low} and {high}")
    return value


def query_float(request: Request, name: str, default: float, high: float) -> float:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError as exc:
        raise InvalidInput(f"query parameter {name} must be a number") from exc
    if not 0 <= value <= high:
        raise InvalidInput(f"query parameter {name} must be between 0 and {high}")
    return value


def internal_app(
    component: str,
    routes: Sequence[BaseRoute],
    token: str,
    versions: VersionRange,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    extra_root: Mapping[str, Any] | None = None,
    direct: Collection[str] = (),
) -> ASGIApp:
    """A component's internal service: its routes behind the gate, plus ``GET /``.

    The routes whose paths are in ``direct`` are answered by ``DirectRoutes``.
    """

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
        exception_handlers={AccelError: _on_accel_error, HTTPException: _on_http_error},
        lifespan=lifespan,
    )
    endpoints = {
        (method, route.path): route.endpoint
        for route in routes
        if isinstance(route, Route) and route.path in direct
        for method in route.methods or ()
    }
    if endpoints:
        app = DirectRoutes(app, endpoints)
    return RequestTimer(InternalGate(app, token, versions), component)
