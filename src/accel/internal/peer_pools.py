"""One small connection pool per peer, for a client that talks to thousands of them.

httpcore's pool looks through all of its connections on every request, asking
each whether it expired (a socket poll and an attribute lookup per connection). A
conductor holding connections to a thousand agents spent more CPU in that scan than
in the syncs themselves (15% of a resync, by its profile). Here each peer gets a
pool of its own, found by one dict lookup, so a request looks only at its peer's
few connections. The least recently used peers' pools are closed past ``max_peers``.
"""

from __future__ import annotations

import ssl
from collections import OrderedDict

import httpx

PeerKey = tuple[bytes, bytes, int | None]


class PeerPools(httpx.AsyncBaseTransport):
    def __init__(
        self,
        verify: ssl.SSLContext,
        connections_per_peer: int = 8,
        idle_per_peer: int = 2,
        max_peers: int = 10_000,
    ) -> None:
        self.verify = verify
        self.limits = httpx.Limits(
            max_connections=connections_per_peer,
            max_keepalive_connections=min(idle_per_peer, connections_per_peer),
        )
        self.max_peers = max_peers
        self._pools: OrderedDict[PeerKey, httpx.AsyncHTTPTransport] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        key = (url.raw_scheme, url.raw_host, url.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = httpx.AsyncHTTPTransport(verify=self.verify, limits=self.limits)
            self._pools[key] = pool
            while len(self._pools) > self.max_peers:
                _, oldest = self._pools.popitem(last=False)
                await oldest.aclose()
        else:
            self._pools.move_to_end(key)
        return await pool.handle_async_request(request)

    async def aclose(self) -> None:
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            await pool.aclose()
