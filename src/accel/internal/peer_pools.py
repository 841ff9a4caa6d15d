"""One small connection pool per peer, for a client that talks to thousands of them.

httpcore's pool looks through all of its connections on every request, asking
each whether it expired (a socket poll and an attribute lookup per connection). A
conductor holding connections to a thousand agents spent more CPU in that scan than
in the syncs themselves (15% of a resync, by its profile). Here each peer gets a
pool of its own, found by one dict lookup, so a request looks only at its peer's
few connections.

httpcore notices that a server closed an idle connection only when that pool is
used again, which for an agent synced every minute would keep one dead socket per
agent open. So pools unused for ``idle_seconds`` are closed, as are the least
recently used ones past ``max_peers``; a pool with a request in flight (a long
poll) is never closed under it. An idle connection is reused for ``keepalive``
seconds (httpx's expiry), which an agent sets past its heartbeat interval.
"""

from __future__ import annotations

import ssl
import time
from collections import OrderedDict
from contextlib import suppress
from dataclasses import dataclass, field
from itertools import islice

import httpx

PeerKey = tuple[bytes, bytes, int | None]


@dataclass
class _Peer:
    transport: httpx.AsyncHTTPTransport
    in_flight: int = 0
    last_used: float = field(default_factory=time.monotonic)


class PeerPools(httpx.AsyncBaseTransport):
    def __init__(
        self,
        verify: ssl.SSLContext,
        connections_per_peer: int = 8,
        idle_per_peer: int = 2,
        max_peers: int = 10_000,
        idle_seconds: float | None = None,
        keepalive: float = 5.0,
    ) -> None:
        self.verify = verify
        self.limits = httpx.Limits(
            max_connections=connections_per_peer,
            max_keepalive_connections=min(idle_per_peer, connections_per_peer),
            keepalive_expiry=keepalive,
        )
        self.max_peers = max_peers
        # By default a pool is not let go while its idle connection may still be used.
        self.idle_seconds = max(30.0, keepalive) if idle_seconds is None else idle_seconds
        # Least recently used first.
        self._peers: OrderedDict[PeerKey, _Peer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._peers)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        key = (url.raw_scheme, url.raw_host, url.port)
        peer = self._peers.get(key)
        if peer is None:
            peer = _Peer(httpx.AsyncHTTPTransport(verify=self.verify, limits=self.limits))
            self._peers[key] = peer
        else:
            self._peers.move_to_end(key)
        peer.in_flight += 1
        try:
            return await peer.transport.handle_async_request(request)
        finally:
            peer.in_flight -= 1
            peer.last_used = time.monotonic()
            await self._let_go(keep=key)

    async def _let_go(self, keep: PeerKey) -> None:
        """Closes idle pools from the least recently used end, a few per request; never
        ``keep``, whose answer's body is still to be read."""
        now = time.monotonic()
        for key in list(islice(self._peers, 8)):
            peer = self._peers.get(key)
            if peer is None:  # closed by another request's round while we awaited
                continue
            stale = now - peer.last_used > self.idle_seconds
            if key == keep or peer.in_flight or not (stale or len(self._peers) > self.max_peers):
                continue
            del self._peers[key]
            # Another peer's pool: whatever its close raises is not this answer's.
            with suppress(Exception):
                await peer.transport.aclose()

    async def aclose(self) -> None:
        peers = list(self._peers.values())
        self._peers.clear()
        for peer in peers:
            await peer.transport.aclose()
