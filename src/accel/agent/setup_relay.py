"""The agent's part of the setup call: hand it to the driver that owns the hardware.

The agent runs nothing itself; it picks the node's driver of the call's kind, passes
the call on and remembers which driver holds each operation, so that progress can
be asked of the agent as well. A driver's refusal (400, 404, 409) is relayed with
its own status and words.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from cachetools import LRUCache
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from accel.errors import NotFound
from accel.internal.client import InternalClient
from accel.internal.gate import require
from accel.internal.schemas import Kind
from accel.internal.setup_schemas import SetupCall
from accel.internal.versions import Feature, VersionRange
from accel.web.bodies import read_body
from accel.web.queries import only_params

MAX_REMEMBERED = 10_000


class Registered(Protocol):
    @property
    def endpoint(self) -> str: ...


class SetupRelay:
    def __init__(
        self,
        drivers: Callable[[Kind], Registered | None],
        client: Callable[[], InternalClient],
        versions: VersionRange,
    ) -> None:
        self._drivers = drivers
        self._client = client
        self._versions = versions
        # Which driver holds each operation; the least recently asked about are forgotten.
        self._holders: LRUCache[str, Kind] = LRUCache(MAX_REMEMBERED)

    async def start(self, request: Request) -> Response:
        require(request, Feature.SETUP, "setup", self._versions)
        only_params(request)
        call = await read_body(request, SetupCall)
        driver = self._driver(call.kind)
        progress = await self._client().setup(driver.endpoint, call)
        self._remember(str(call.operation), call.kind)
        return JSONResponse(progress.model_dump(mode="json"), status_code=202)

    async def progress(self, request: Request) -> Response:
        require(request, Feature.SETUP, "setup", self._versions)
        only_params(request)
        operation = request.path_params["operation"]
        kind = self._holders.get(operation)
        if kind is None:
            raise NotFound(f"this node runs no setup operation {operation}")
        progress = await self._client().setup_progress(self._driver(kind).endpoint, operation)
        return JSONResponse(progress.model_dump(mode="json"))

    def _driver(self, kind: Kind) -> Registered:
        driver = self._drivers(kind)
        if driver is None:
            raise NotFound(f"this node has no {kind.value} driver registered")
        return driver

    def _remember(self, operation: str, kind: Kind) -> None:
        self._holders[operation] = kind
