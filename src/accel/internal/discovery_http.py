"""The HTTP side of ``POST /v1/discovery`` and ``GET /v1/hardware``, which drivers and
agents serve alike: the same bodies, the same versions, the same long poll.

A report's JSON and ETag are made once per report and version (``Renderings``): an
idle node's discoveries hand back the very result of the last one, so a heartbeat
that finds nothing changed renders and hashes nothing (docs/benchmarks.md, issue 25).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from accel.internal.discovery_state import DiscoveryState
from accel.internal.gate import request_version
from accel.internal.schemas import DriverOutcome, HardwareEntry
from accel.internal.versions import Feature, Version
from accel.web.queries import only_params, query_float, query_int

MAX_WAIT_SECONDS = 60.0
Result = TypeVar("Result")


async def discovery_answer(
    request: Request,
    discoveries: DiscoveryState[Result],
    start: Callable[[], int],
    answer: Callable[[Version, int, Result], Response],
) -> Response:
    """``POST /v1/discovery``: starts (or joins) a discovery. From version 1.4 a
    ``wait`` of up to ``MAX_WAIT_SECONDS`` answers 200 with its result once it
    completes (``answer``), or 202 as before if it did not within the wait."""
    version = request_version(request)
    if not Feature.DISCOVERY_WAIT.spoken_in(version):
        only_params(request)
        return discovery_started(version, start())
    only_params(request, ("wait",))
    wait = query_float(request, "wait", 0.0, MAX_WAIT_SECONDS)
    generation = start()
    if wait > 0:
        finished, result = await discoveries.wait_for(generation, wait)
        if finished >= generation:
            return answer(version, finished, result)
    return discovery_started(version, generation)


def discovery_started(version: Version, generation: int) -> Response:
    body: dict[str, object] = {"status": "IN-PROGRESS"}
    if Feature.GENERATIONS.spoken_in(version):
        body["generation"] = generation
    return JSONResponse(body, status_code=202)


async def requested_result(
    request: Request, discoveries: DiscoveryState[Result]
) -> tuple[Version, int, Result]:
    """The result the caller asked for: at least ``min_generation``, waiting ``wait`` s."""
    only_params(request, ("min_generation", "wait"))
    wanted = query_int(request, "min_generation", 0, 0, 2**62)
    wait = query_float(request, "wait", 0.0, MAX_WAIT_SECONDS)
    generation, result = await discoveries.wait_for(wanted, wait)
    return request_version(request), generation, result


@dataclass(frozen=True, slots=True)
class Rendered:
    """A report's parts as the wire has them at one version, and its ETag."""

    entries: Sequence[HardwareEntry]
    drivers: Sequence[DriverOutcome] | None
    hardware_json: str
    drivers_json: str | None
    etag: str


class Renderings:
    """The last report rendered at each version, for one service's reports.

    Known by identity: a discovery's result is never changed once made, so the same
    objects render the same. A new result, even an equal one, is rendered anew."""

    def __init__(self) -> None:
        self._last: dict[Version, Rendered] = {}

    def render(
        self,
        version: Version,
        entries: Sequence[HardwareEntry],
        drivers: Sequence[DriverOutcome] | None,
    ) -> Rendered:
        last = self._last.get(version)
        if last is not None and last.entries is entries and last.drivers is drivers:
            return last
        rendered = _render(version, entries, drivers)
        self._last[version] = rendered
        return rendered


def _render(
    version: Version, entries: Sequence[HardwareEntry], drivers: Sequence[DriverOutcome] | None
) -> Rendered:
    hardware_json = _hardware_json(version, entries)
    drivers_json = _drivers_json(drivers) if drivers is not None else None
    return Rendered(
        entries, drivers, hardware_json, drivers_json, _etag(hardware_json, drivers_json)
    )


def hardware_response(
    version: Version,
    generation: int,
    entries: Sequence[HardwareEntry],
    drivers: Sequence[DriverOutcome] | None = None,
    if_none_match: str | None = None,
    renderings: Renderings | None = None,
) -> Response:
    """A hardware answer. From 1.4 it carries an ETag of its content (the hardware and
    the drivers' outcomes, not the generation), and is 304 with no body when that is
    the caller's ``If-None-Match``: a resync that changed nothing moves no body.
    ``renderings``: where this service's last reports are kept rendered."""
    render = renderings.render if renderings is not None else _render
    rendered = render(version, entries, drivers)
    hardware_json, drivers_json = rendered.hardware_json, rendered.drivers_json
    if not Feature.GENERATIONS.spoken_in(version):
        return Response(f'{{"hardware":{hardware_json}}}', media_type="application/json")
    if not Feature.DISCOVERY_WAIT.spoken_in(version):
        return Response(
            _content(hardware_json, generation, drivers_json), media_type="application/json"
        )
    etag = rendered.etag
    if if_none_match == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(
        _content(hardware_json, generation, drivers_json),
        media_type="application/json",
        headers={"ETag": etag},
    )


def _content(hardware_json: str, generation: int, drivers_json: str | None) -> str:
    content = f'{{"hardware":{hardware_json},"generation":{generation}'
    if drivers_json is not None:
        content += f',"drivers":{drivers_json}'
    return content + "}"


def hardware_etag(
    version: Version,
    entries: Sequence[HardwareEntry],
    drivers: Sequence[DriverOutcome],
    renderings: Renderings | None = None,
) -> str:
    """The ETag ``hardware_response`` gives this content at ``version`` (1.4 and later)."""
    render = renderings.render if renderings is not None else _render
    return render(version, entries, drivers).etag


def _etag(hardware_json: str, drivers_json: str | None) -> str:
    digest = hashlib.sha256(hardware_json.encode())
    digest.update(b"\0" + (drivers_json or "").encode())
    return f'"{digest.hexdigest()[:40]}"'


def _hardware_json(version: Version, entries: Sequence[HardwareEntry]) -> str:
    return _json([entry.wire(version) for entry in entries])


def _drivers_json(drivers: Sequence[DriverOutcome]) -> str:
    return _json([d.model_dump(mode="json", exclude_none=True) for d in drivers])


def _json(value: object) -> str:
    # As Starlette's JSONResponse renders: compact, UTF-8, no NaN.
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
