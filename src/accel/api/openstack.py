"""Cyborg's version documents at ``/`` and ``/v2``, and the links its bodies carry.

Its microversions are accel.api.microversions'; its error body accel.api.failures'.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from accel.api.microversions import MAX_MICROVERSION, MIN_MICROVERSION, text


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
        "min_version": text(MIN_MICROVERSION),
        "max_version": text(MAX_MICROVERSION),
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
