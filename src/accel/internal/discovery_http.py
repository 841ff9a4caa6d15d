"""The HTTP side of ``POST /v1/discovery`` and ``GET /v1/hardware``, which drivers and
agents serve alike: the same bodies, the same versions, the same long poll.

A report's ETag is made once per report and version (``Renderings``): an idle node's
discoveries hand back the very result of the last one, so a heartbeat that finds
nothing changed renders and hashes nothing (docs/benchmarks.md, issue 25).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydantic import TypeAdapter
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


@dataclass(frozen=True)
class RenderedEntries:
    """A driver's entries as an agent keeps them: the JSON text of their wire form at one
    version, not the models, which weigh about six times as much (docs/benchmarks.md,
    issue 25). An answer at that version is the text itself; at another, the text is
    parsed again and rendered at it."""

    version: Version
    text: str  # a JSON array, as ``_hardware_json`` renders it

    @classmethod
    def of(cls, version: Version, entries: Sequence[HardwareEntry]) -> RenderedEntries:
        return cls(version, _hardware_json(version, entries))

    def at(self, version: Version) -> str:
        if version == self.version:
            return self.text
        return _hardware_json(version, _ENTRIES.validate_json(self.text))


@dataclass(frozen=True)
class NodeHardware:
    """A node's entries, its drivers' ``RenderedEntries`` one after another."""

    parts: tuple[RenderedEntries, ...] = ()

    def text_at(self, version: Version) -> str:
        """The JSON array of every part's entries, as ``_hardware_json`` renders them all."""
        items = [text[1:-1] for part in self.parts if (text := part.at(version)) != "[]"]
        return "[" + ",".join(items) + "]"


_ENTRIES = TypeAdapter(list[HardwareEntry])
Hardware = Sequence[HardwareEntry] | NodeHardware


@dataclass(frozen=True, slots=True)
class _Known:
    """A report's parts, by identity, and their ETag at one version."""

    entries: Hardware
    drivers: Sequence[DriverOutcome] | None
    etag: str


class Renderings:
    """The ETag of one service's last report at each version, so that a report is
    rendered and hashed once, and an unchanged one answers 304 at once.

    Known by identity: a discovery's result is never changed once made, so the same
    objects render the same; a new result, even an equal one, is rendered anew. Only
    the ETag is kept, not the JSON: an idle node's answers are 304s, and the
    simulator's thousands of drivers and agents would each hold their report twice."""

    def __init__(self) -> None:
        self._last: dict[Version, _Known] = {}

    def etag(
        self,
        version: Version,
        entries: Hardware,
        drivers: Sequence[DriverOutcome] | None,
    ) -> str | None:
        """The ETag of these very parts at ``version``, if they were rendered last."""
        last = self._last.get(version)
        if last is not None and last.entries is entries and last.drivers is drivers:
            return last.etag
        return None

    def keep(
        self,
        version: Version,
        entries: Hardware,
        drivers: Sequence[DriverOutcome] | None,
        etag: str,
    ) -> None:
        self._last[version] = _Known(entries, drivers, etag)


def hardware_response(
    version: Version,
    generation: int,
    entries: Hardware,
    drivers: Sequence[DriverOutcome] | None = None,
    if_none_match: str | None = None,
    renderings: Renderings | None = None,
    resource_provider_name: str | None = None,
) -> Response:
    """A hardware answer. From 1.4 it carries an ETag of its content (the hardware, the
    drivers' outcomes and an agent's ``resource_provider_name``, not the generation),
    and is 304 with no body when that is the caller's ``If-None-Match``: a resync that
    changed nothing moves no body. ``renderings``: the ETags of this service's last
    reports (of one ``resource_provider_name``: an agent's is fixed at its start)."""
    etag = renderings.etag(version, entries, drivers) if renderings is not None else None
    waits = Feature.DISCOVERY_WAIT.spoken_in(version)
    if waits and etag is not None and if_none_match == etag:
        return Response(status_code=304, headers={"ETag": etag})
    hardware_json = _hardware_json(version, entries)
    if not Feature.GENERATIONS.spoken_in(version):
        return Response(f'{{"hardware":{hardware_json}}}', media_type="application/json")
    drivers_json = _drivers_json(drivers) if drivers is not None else None
    content = f'{{"hardware":{hardware_json},"generation":{generation}'
    if drivers_json is not None:
        content += f',"drivers":{drivers_json}'
    if resource_provider_name is not None:
        content += f',"resource_provider_name":{_json(resource_provider_name)}'
    content += "}"
    if not waits:
        return Response(content, media_type="application/json")
    if etag is None:  # else known, and the body above is one the caller has not
        etag = _etag(hardware_json, drivers_json, resource_provider_name)
        if renderings is not None:
            renderings.keep(version, entries, drivers, etag)
    if if_none_match == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(content, media_type="application/json", headers={"ETag": etag})


def hardware_etag(
    version: Version,
    entries: Hardware,
    drivers: Sequence[DriverOutcome],
    renderings: Renderings | None = None,
    resource_provider_name: str | None = None,
) -> str:
    """The ETag ``hardware_response`` gives this content at ``version`` (1.4 and later)."""
    etag = renderings.etag(version, entries, drivers) if renderings is not None else None
    if etag is None:
        hardware_json = _hardware_json(version, entries)
        etag = _etag(hardware_json, _drivers_json(drivers), resource_provider_name)
        if renderings is not None:
            renderings.keep(version, entries, drivers, etag)
    return etag


def _etag(hardware_json: str, drivers_json: str | None, resource_provider_name: str | None) -> str:
    digest = hashlib.sha256(hardware_json.encode())
    digest.update(b"\0" + (drivers_json or "").encode())
    if resource_provider_name is not None:  # a node without one keeps its ETags
        digest.update(b"\0" + resource_provider_name.encode())
    return f'"{digest.hexdigest()[:40]}"'


def _hardware_json(version: Version, entries: Hardware) -> str:
    if isinstance(entries, NodeHardware):
        return entries.text_at(version)
    return _json([entry.wire(version) for entry in entries])


def _drivers_json(drivers: Sequence[DriverOutcome]) -> str:
    return _json([d.model_dump(mode="json", exclude_none=True) for d in drivers])


def _json(value: object) -> str:
    # As Starlette's JSONResponse renders: compact, UTF-8, no NaN.
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
