"""Whether a hello may name the endpoint it names (no server-side request forgery).

A hello is input from the network, and its endpoint is where we will connect next.
By default that endpoint must be the very address the hello came from; operators
behind NAT or proxies allow other networks explicitly.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Sequence

import anyio.to_thread

from accel.errors import Forbidden
from accel.internal.endpoints import split_endpoint

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(text: str | None) -> tuple[Network, ...]:
    """``CIDR[,CIDR...]`` as networks; an empty or missing text allows none."""
    if not text:
        return ()
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()
    )


def _resolve(host: str) -> list[Address]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def _unmapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=1 << 16)
def _literal(host: str) -> Address | None:
    """``host`` as an address if it is one (an agent's, again at every heartbeat)."""
    try:
        return _unmapped(ipaddress.ip_address(host))
    except ValueError:
        return None


async def check_origin(endpoint: str, source: str | None, allowed: Sequence[Network]) -> None:
    """Raises Forbidden unless ``endpoint`` is the caller's own address or allowed."""
    host, _ = split_endpoint(endpoint)
    literal = _literal(host)
    if literal is not None:  # an address needs no resolver, nor a worker thread
        addresses = [literal]
    else:
        addresses = [_unmapped(a) for a in await anyio.to_thread.run_sync(_resolve, host)]
    if not addresses:
        raise Forbidden(f"endpoint host {host!r} does not resolve")
    if source is not None:
        caller = _literal(source)
        if caller is not None and caller in addresses:
            return
    if allowed and all(any(a in network for network in allowed) for a in addresses):
        return
    raise Forbidden(
        f"endpoint {endpoint} is not the address this hello came from ({source}) "
        "and not in an allowed network"
    )
