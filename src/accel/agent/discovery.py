"""The node's discovery: every registered driver asked at once, each within its timeout.

A failed driver is reported as failed in the answer's ``drivers`` (never silently
missing), so a conductor does not take its hardware for vanished. A discovery that
began before a driver registered is stale: a start then runs one more after it
instead of joining it.

Each driver is asked with the ETag of its last report: an unchanged driver answers
304 and its stored entries stand, so an idle node's heartbeats (a discovery each)
move and parse no reports (docs/benchmarks.md, issue 25). A report is parsed and
checked once, then kept as the text the agent answers with (``RenderedEntries``), not
as models: a sixth of the memory, and an answer or an ETag is that text, not every
entry rendered again. When every driver fared as in the last discovery, with the
same entries, that discovery's very result is the answer again, which ``renderings``
then has hashed already.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from accel.agent.drivers import DriverRegistry, RegisteredDriver
from accel.errors import PeerError
from accel.internal.client import InternalClient
from accel.internal.discovery_http import NodeHardware, RenderedEntries, Renderings
from accel.internal.discovery_state import DiscoveryState
from accel.internal.schemas import (
    MAX_ATTACHABLE_PER_DRIVER,
    MAX_ENTRIES_PER_DRIVER,
    MAX_REASON_LENGTH,
    DriverOutcome,
    Kind,
)
from accel.metrics import DISCOVERIES

log = logging.getLogger(__name__)

DriverAnswer = tuple[RenderedEntries | None, str | None]  # its entries, or why none


@dataclass(frozen=True)
class NodeReport:
    """What a node discovery found: the agent's hardware answer, before rendering."""

    hardware: NodeHardware
    drivers: list[DriverOutcome]
    resource_provider_name: str | None = None


class NodeDiscovery:
    def __init__(
        self,
        drivers: DriverRegistry,
        client: InternalClient,
        timeout: float,
        resource_provider_name: str | None = None,
    ) -> None:
        self.drivers = drivers
        self.resource_provider_name = resource_provider_name
        self.state: DiscoveryState[NodeReport] = DiscoveryState(NodeReport(NodeHardware(), []))
        self._client = client
        self._timeout = timeout
        self._registry_version = -1
        # Each driver's last report, by where it answers: its ETag and its entries.
        self._reports: dict[tuple[str, Kind], tuple[str, RenderedEntries]] = {}
        self.renderings = Renderings()
        # The last discovery's answers, driver by driver, and the result made of them.
        self._last: tuple[list[tuple[RegisteredDriver, DriverAnswer]], NodeReport] | None = None

    @property
    def registry_version(self) -> int:
        """The driver registry's version when the last discovery began."""
        return self._registry_version

    def start(self) -> int:
        """Starts a discovery, or joins the running one if no driver registered since
        it began; its generation."""
        current = self._registry_version == self.drivers.version
        return self.state.start(self._discover_all, join=current)

    async def wait_for(self, generation: int, wait: float) -> tuple[int, NodeReport]:
        """The last completed result, after waiting up to ``wait`` s for ``generation``."""
        return await self.state.wait_for(generation, wait)

    async def aclose(self) -> None:
        await self.state.close()

    async def _discover_all(self) -> NodeReport:
        self._registry_version = self.drivers.version
        drivers = self.drivers.all()
        asked = {(driver.endpoint, driver.kind) for driver in drivers}
        for gone in set(self._reports) - asked:
            del self._reports[gone]
        results = await asyncio.gather(*(self._discover_one(driver) for driver in drivers))
        answers = list(zip(drivers, results, strict=True))
        if self._last is not None and _same_answers(self._last[0], answers):
            return self._last[1]
        hardware: list[RenderedEntries] = []
        outcomes: list[DriverOutcome] = []
        for driver, (entries, error) in zip(drivers, results, strict=True):
            if entries is not None:
                hardware.append(entries)
            outcomes.append(
                DriverOutcome(
                    type=driver.kind,
                    endpoint=driver.endpoint,
                    state="ok" if error is None else "failed",
                    error=error,
                )
            )
        found = NodeReport(NodeHardware(tuple(hardware)), outcomes, self.resource_provider_name)
        self._last = (answers, found)
        return found

    async def _discover_one(self, driver: RegisteredDriver) -> DriverAnswer:
        timeout = self._timeout
        key = (driver.endpoint, driver.kind)
        last = self._reports.get(key)
        try:
            async with asyncio.timeout(timeout):
                found = await self._client.discover_if_changed(
                    driver.endpoint, wait=timeout, etag=last[0] if last else None
                )
        except (PeerError, TimeoutError) as exc:
            return _failed(driver, str(exc) or f"no answer within {timeout:g}s")
        if found.report is None:  # unchanged since the ETag sent: what it said then
            assert last is not None, "asked without an ETag: never unchanged"
            DISCOVERIES.labels("agent", "ok").inc()
            return last[1], None
        answer = found.report
        if len(answer.hardware) > MAX_ENTRIES_PER_DRIVER:
            # Refused whole, as a failed driver: the conductor keeps what it stored.
            return _failed(
                driver,
                f"reported {len(answer.hardware)} hardware entries, more than the "
                f"{MAX_ENTRIES_PER_DRIVER} a driver may report",
            )
        attachable = sum(entry.attachable for entry in answer.hardware)
        if attachable > MAX_ATTACHABLE_PER_DRIVER:
            # As above: the node's report, all drivers together, stays within its bound.
            return _failed(
                driver,
                f"reported hardware making {attachable} attach handles, more than the "
                f"{MAX_ATTACHABLE_PER_DRIVER} a driver may report",
            )
        DISCOVERIES.labels("agent", "ok").inc()
        entries = [h for h in answer.hardware if h.acc_specs.device_type == driver.kind]
        if len(entries) != len(answer.hardware):
            log.warning("driver %s reported hardware of other kinds; ignored", driver.kind)
        # Rendered at the newest version this agent speaks: the one its conductor speaks
        # but in a rolling upgrade, and it holds everything an older one is answered.
        rendered = RenderedEntries.of(self._client.versions.maximum, entries)
        if found.etag is not None:
            self._reports[key] = (found.etag, rendered)
        return rendered, None


def _same_answers(
    last: list[tuple[RegisteredDriver, DriverAnswer]],
    now: list[tuple[RegisteredDriver, DriverAnswer]],
) -> bool:
    """Whether the same drivers answered the same: the very entries a driver gave
    before (a 304 stands for them), or the same failure."""
    if len(last) != len(now):
        return False
    for (was, (was_entries, was_error)), (driver, (entries, error)) in zip(last, now, strict=True):
        if (was.endpoint, was.kind) != (driver.endpoint, driver.kind) or was_error != error:
            return False
        if entries is not was_entries and (entries or was_entries):
            return False
    return True


def _failed(driver: RegisteredDriver, reason: str) -> DriverAnswer:
    log.warning("driver %s at %s failed: %s", driver.kind, driver.endpoint, reason)
    DISCOVERIES.labels("agent", "failed").inc()
    if len(reason) > MAX_REASON_LENGTH:
        reason = reason[: MAX_REASON_LENGTH - 3] + "..."
    return None, reason
