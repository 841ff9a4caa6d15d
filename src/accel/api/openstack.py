"""What makes the API look like OpenStack Cyborg's to its clients.

Version documents at ``/`` and ``/v2``; microversions in ``OpenStack-API-Version``
(min 2.0, max 2.3) with the response headers Cyborg sends; and Cyborg's error body,
``{"error_message": "<JSON text of faultcode/faultstring/debuginfo>"}``, which
openstacksdk and python-cyborgclient parse.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from accel.internal.server import replace_headers

MIN_MICROVERSION = (2, 0)
MAX_MICROVERSION = (2, 3)
SERVICE_TYPE = "accelerator"
Microversion = tuple[int, int]


def _text(version: Microversion) -> str:
    return f"{version[0]}.{version[1]}"


def error_body(status: int, message: str) -> dict[str, Any]:
    fault = {
        "faultcode": "Client" if status < 500 else "Server",
        "faultstring": message,
        "debuginfo": None,
    }
    return {"error_message": json.dumps(fault)}


def error_json(status: int, message: str) -> bytes:
    """Cyborg's error body as bytes, for answers written below the application (the
    protocol's refusals, accel.http_protocol)."""
    return json.dumps(error_body(status, message)).encode()


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status)


def parse_microversion(header: str | None) -> Microversion:
    """The microversion a request asks for; ValueError when out of range or malformed."""
    if header is None:
        return MIN_MICROVERSION
    value = header.strip()
    if value.lower().startswith(SERVICE_TYPE):
        value = value[len(SERVICE_TYPE) :].strip()
    if value.lower() == "latest":
        return MAX_MICROVERSION
    match = re.fullmatch(r"(\d+)\.(\d+)", value)
    if match is None:
        raise ValueError(f"invalid microversion {header!r}")
    version = (int(match.group(1)), int(match.group(2)))
    if not MIN_MICROVERSION <= version <= MAX_MICROVERSION:
        raise ValueError(
            f"microversion {_text(version)} is not between "
            f"{_text(MIN_MICROVERSION)} and {_text(MAX_MICROVERSION)}"
        )
    return version


class Microversions:
    """Settles the microversion of every ``/v2`` request and labels the answer with it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "/v2" not in scope["path"]:
            await self.app(scope, receive, send)
            return
        try:
            version = parse_microversion(Headers(scope=scope).get("openstack-api-version"))
        except ValueError as exc:
            response = error_response(406, str(exc))
            _label(response.headers, MAX_MICROVERSION)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["microversion"] = version

        label = _label_headers(version)

        async def labelled(message: Message) -> None:
            if message["type"] == "http.response.start":
                replace_headers(message, label)
            await send(message)

        await self.app(scope, receive, labelled)


@functools.cache
def _label_headers(version: Microversion) -> tuple[tuple[bytes, bytes], ...]:
    """``_label``'s headers as raw pairs, built once per microversion."""
    headers = MutableHeaders()
    _label(headers, version)
    return tuple(headers.raw)


def _label(headers: MutableHeaders, version: Microversion) -> None:
    headers["OpenStack-API-Minimum-Version"] = _text(MIN_MICROVERSION)
    headers["OpenStack-API-Maximum-Version"] = _text(MAX_MICROVERSION)
    headers["OpenStack-API-Version"] = f"{SERVICE_TYPE} {_text(version)}"
    headers["Vary"] = "OpenStack-API-Version"


def microversion(request: Request) -> Microversion:
    found: Microversion = request.scope.get("state", {}).get("microversion", MIN_MICROVERSION)
    return found


def public_url(request: Request) -> str:
    """Scheme and host the caller used; links add the catalog prefix themselves."""
    return f"{request.url.scheme}://{request.url.netloc}"


def link(request: Request, collection: str, uuid: str) -> list[dict[str, str]]:
    # Cyborg writes the /accelerator segment into every link, whatever the mount.
    return [{"href": f"{public_url(request)}/accelerator/v2/{collection}/{uuid}", "rel": "self"}]


def _version_document(request: Request, trailing: str = "") -> dict[str, Any]:
    return {
        "id": "v2",
        "status": "CURRENT",
        "min_version": _text(MIN_MICROVERSION),
        "max_version": _text(MAX_MICROVERSION),
        "links": [{"href": f"{public_url(request)}/accelerator/v2{trailing}", "rel": "self"}],
    }


async def root(request: Request) -> Response:
    version = _version_document(request)
    return JSONResponse(
        {
            "name": "OpenStack Cyborg API",
            "description": "accel: accelerator management, compatible with Cyborg's v2 API.",
            "versions": [version],
            "default_version": version,
        }
    )


async def v2_root(request: Request) -> Response:
    return JSONResponse({**_version_document(request, "/"), "id": "v2.0"})
