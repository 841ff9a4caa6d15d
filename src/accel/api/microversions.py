"""The public API's microversions, as Cyborg's: which one a request asks for in
``OpenStack-API-Version`` (2.0 to 2.3), the headers Cyborg labels an answer with,
and what each microversion brought (``ApiFeature``), which endpoints test by name.
"""

from __future__ import annotations

import functools
import re
from enum import Enum, unique

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from accel.api.failures import CYBORG_ERRORS
from accel.errors import SupportedRange, VersionNotAcceptable
from accel.web.headers import replace_headers

SERVICE_TYPE = "accelerator"
Microversion = tuple[int, int]


# Unique: a second feature of one version would quietly become an alias of the
# first (and drop out of iteration): a version's features go under one name.
@unique
class ApiFeature(Enum):
    """What each microversion after 2.0 brought, as Cyborg has it."""

    # A bind may set the request's project_id (admin only).
    BIND_PROJECT_ID = (2, 1)
    # GET /v2/device_profiles/{name}, not only by uuid.
    PROFILE_BY_NAME = (2, 2)
    # A device shows its status.
    DEVICE_STATUS = (2, 3)

    @property
    def since(self) -> Microversion:
        """The first microversion that has it."""
        since: Microversion = self.value
        return since

    def spoken_in(self, version: Microversion) -> bool:
        """Whether a request in ``version`` has this feature."""
        since: Microversion = self._value_  # not the property: once per device listed
        return version >= since


MIN_MICROVERSION: Microversion = (2, 0)
MAX_MICROVERSION: Microversion = max(feature.since for feature in ApiFeature)


def text(version: Microversion) -> str:
    return f"{version[0]}.{version[1]}"


SUPPORTED = SupportedRange(text(MIN_MICROVERSION), text(MAX_MICROVERSION))


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
            f"microversion {text(version)} is not between "
            f"{text(MIN_MICROVERSION)} and {text(MAX_MICROVERSION)}"
        )
    return version


def microversion(request: Request) -> Microversion:
    """The microversion ``Microversions`` settled for this request."""
    found: Microversion = request.scope.get("state", {}).get("microversion", MIN_MICROVERSION)
    return found


def has(request: Request, feature: ApiFeature) -> bool:
    """Whether the request asked for a microversion with ``feature``."""
    return feature.spoken_in(microversion(request))


def require(request: Request, feature: ApiFeature, what: str) -> None:
    """Refuses (406) a request in a microversion without ``feature``."""
    if not has(request, feature):
        raise VersionNotAcceptable(f"{what} needs microversion {text(feature.since)}", SUPPORTED)


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
            response = CYBORG_ERRORS.response(406, str(exc))
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
    headers["OpenStack-API-Minimum-Version"] = text(MIN_MICROVERSION)
    headers["OpenStack-API-Maximum-Version"] = text(MAX_MICROVERSION)
    headers["OpenStack-API-Version"] = f"{SERVICE_TYPE} {text(version)}"
    headers["Vary"] = "OpenStack-API-Version"
