"""The agent's heartbeat: a hello to a conductor every interval, and the ETag it carries.

Hellos go to the first conductor that answers, in the order given, starting from the
one that answered last. A new driver makes the next hello, sent at once, ask for a
resync. Unanswered hellos are retried soon, then less and less often
(``hello_pause``).

From internal version 1.5 a hello may carry the ETag of the node's hardware, so that
the node, not the conductor, pays for noticing that nothing changed (the
conductor's side is in docs/internal-api.md). When a hello carries one:

1. Never to a conductor that speaks below 1.5: it would answer 400.
2. Never in a hello that asks for a resync: the sync reads the hardware anyway.
3. A heartbeat's hello: the ETag of a discovery run, or joined, just before it and
   waited on for at most half the heartbeat interval (a hung driver must not hold
   the heartbeat up). If that discovery is not done, the hello goes without, and a
   hello of its own carries the ETag once the discovery ends, if it ends within
   another half interval.
4. A retry after an unanswered hello, and that late hello, run no discovery: they
   carry the last ETag computed if it is younger than a heartbeat interval and was
   computed at the version spoken now and for the drivers registered now; else none.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from accel.agent.discovery import NodeDiscovery, NodeReport
from accel.errors import PeerError
from accel.internal.client import InternalClient
from accel.internal.discovery_http import Renderings, hardware_etag
from accel.internal.schemas import AgentHello
from accel.internal.versions import Feature, Version

log = logging.getLogger(__name__)

Clock = Callable[[], float]


def hello_pause(heartbeat_interval: float, failures: int) -> float:
    """Seconds until the next hello after ``failures`` unanswered rounds in a row.

    Unanswered hellos are retried soon, then less and less often (up to the
    heartbeat interval), each agent at a random point of its window: a fleet whose
    conductors were away must not come back all at once, every second, and keep
    them overloaded (5,000 simulated agents did exactly that).
    """
    if failures == 0:
        return heartbeat_interval
    window = min(heartbeat_interval, 0.5 * 2 ** min(failures, 16))
    return random.uniform(window / 2, window)


@dataclass(frozen=True)
class RememberedEtag:
    etag: str
    computed_at: float  # by the memory's clock
    version: Version  # spoken to the conductor it was computed for
    registry_version: int  # of the drivers its discovery asked


class InventoryMemory:
    """The last inventory ETag this node computed, and whether a hello may reuse it
    (rule 4 of the module's docstring)."""

    def __init__(
        self, max_age: float, clock: Clock = time.monotonic, renderings: Renderings | None = None
    ) -> None:
        """``renderings``: the node's reports as its agent renders them, so that an
        unchanged one is not rendered and hashed again for each hello."""
        self.max_age = max_age
        self.last: RememberedEtag | None = None
        self._clock = clock
        self._renderings = renderings

    def remember(self, version: Version, registry_version: int, found: NodeReport) -> str:
        """The ETag of ``found`` at ``version``, remembered as the last one."""
        etag = hardware_etag(
            version,
            found.hardware,
            found.drivers,
            self._renderings,
            found.resource_provider_name,
        )
        self.last = RememberedEtag(etag, self._clock(), version, registry_version)
        return etag

    def recall(self, version: Version, registry_version: int) -> str | None:
        """The last ETag if it is still young and was computed at ``version`` for the
        drivers of ``registry_version``; else None."""
        last = self.last
        if last is None:
            return None
        young = self._clock() - last.computed_at < self.max_age
        same = last.version == version and last.registry_version == registry_version
        return last.etag if young and same else None


class ConductorHeartbeat:
    """One node's hellos to its conductors, and what each hello carries."""

    def __init__(
        self,
        *,
        name: str,
        endpoint: str,
        conductors: tuple[str, ...],
        interval: float,
        client: InternalClient,
        discovery: NodeDiscovery,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.interval = interval
        self.client = client
        self.memory = InventoryMemory(interval, clock, discovery.renderings)
        self._conductors = conductors
        self._current = 0  # the index of the conductor that answered last
        self._discovery = discovery
        # Counted, not flagged: a registration while a hello is in flight must not be
        # cleared by that hello's answer (it asked for less than is wanted now).
        self._resyncs_wanted = 0
        self._resyncs_asked = 0
        self._now = asyncio.Event()
        # A discovery that ended after its hello was sent (rule 3).
        self._late_etag: asyncio.Task[None] | None = None
        self._late_etag_found = False

    @property
    def conductor(self) -> str | None:
        """The conductor the next hello goes to first."""
        return self._conductors[self._current] if self._conductors else None

    def report_to(self, conductors: tuple[str, ...]) -> None:
        """Says hello to these conductors from now on, beginning at once."""
        self._conductors = conductors
        self._current = 0
        self._now.set()

    def ask_resync(self) -> None:
        """The node's inventory may have grown: the next hello, sent at once, asks for a
        sync."""
        self._resyncs_wanted += 1
        self._now.set()

    async def run_forever(self) -> None:
        """Says hello to a conductor now and every heartbeat interval, failing over."""
        failures = 0
        while True:
            self._now.clear()
            late, self._late_etag_found = self._late_etag_found, False
            # A retry, and the hello of a discovery that ended late, follow rule 4.
            answered = await self.hello(fresh_etag=failures == 0 and not late)
            failures = 0 if answered else failures + 1
            with suppress(TimeoutError):
                async with asyncio.timeout(hello_pause(self.interval, failures)):
                    await self._now.wait()

    async def hello(self, fresh_etag: bool = True) -> bool:
        """One hello, to the first conductor that answers; whether one did.
        ``fresh_etag``: a heartbeat's hello (rule 3), else a retry (rule 4)."""
        wanted = self._resyncs_wanted
        resync = wanted > self._resyncs_asked
        conductors = self._conductors
        etag = None
        if not resync and conductors:
            etag = await self.inventory_etag(conductors[self._current], fresh_etag)
        hello = AgentHello(
            status="READY",
            endpoint=self.endpoint,
            name=self.name,
            resync=resync,
            inventory_etag=etag,
        )
        for offset in range(len(conductors)):
            index = (self._current + offset) % len(conductors)
            try:
                await self.client.agent_hello(conductors[index], hello)
            except PeerError as exc:
                log.warning("hello to conductor failed: %s", exc)
                continue
            if index != self._current:
                log.info("now reporting to conductor %s", conductors[index])
                self._current = index
            self._resyncs_asked = max(self._resyncs_asked, wanted)
            return True
        return False

    async def inventory_etag(self, conductor: str, fresh: bool = True) -> str | None:
        """The ETag a hello to ``conductor`` carries by rules 1, 3 and 4: ``fresh`` for a
        heartbeat's hello, not for a retry."""
        version = self.client.peer_version(conductor)
        if not Feature.HELLO_ETAG.spoken_in(version):
            return None
        if not fresh:
            return self.memory.recall(version, self._discovery.drivers.version)
        generation = self._discovery.start()
        finished, found = await self._discovery.wait_for(generation, self.interval / 2)
        if finished < generation:
            self._hello_when_late(generation, version)
            return None
        return self.memory.remember(version, self._discovery.registry_version, found)

    def _hello_when_late(self, generation: int, version: Version) -> None:
        """Says hello again, with the ETag, once a discovery that overran its hello ends.

        Without it a node whose discovery is slow (a loaded host, a slow driver) never
        confirms its hardware in a hello, and the conductor calls it at every periodic
        resync: a discovery and a round trip, where a hello would have done. A
        discovery that has not ended within the interval is left to the
        next heartbeat, which joins it.
        """
        if self._late_etag is None or self._late_etag.done():
            self._late_etag = asyncio.create_task(
                self._hello_when_found(generation, version), name="late etag"
            )

    async def _hello_when_found(self, generation: int, version: Version) -> None:
        finished, found = await self._discovery.wait_for(generation, self.interval / 2)
        if finished < generation:
            return
        self.memory.remember(version, self._discovery.registry_version, found)
        self._late_etag_found = True
        self._now.set()

    async def aclose(self) -> None:
        """Drops a late hello still waiting and closes the conductors' connections."""
        if self._late_etag is not None:
            self._late_etag.cancel()
            with suppress(asyncio.CancelledError):
                await self._late_etag
        await self.client.aclose()
