"""How components name themselves: node names and ``host:port`` endpoints.

Each has one spelling, because names and endpoints are compared (is this hello's
agent the one that holds the name?) and called back: a form the resolver reads as
another address, or another spelling of the same one, is refused with the reason.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
# A node's name is a host name (the default is the machine's); an underscore, which
# DNS allows and some sites' host names carry, is taken too.
_NAME_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
# Without a look-ahead (pydantic's regex engine has none): its length is checked apart.
NODE_NAME_PATTERN = rf"^{_NAME_LABEL}(\.{_NAME_LABEL})*$"


def check_node_name(name: str) -> str:
    """``name`` if it can name a node (a host name), else ValueError saying why."""
    if len(name) > 253 or re.fullmatch(NODE_NAME_PATTERN, name) is None:
        raise ValueError(
            f"{name!r} is not a host name: dot-separated labels of letters, digits, '-' "
            "and '_', each 1 to 63 long, not starting or ending with '-'"
        )
    return name


# Every heartbeat's endpoint is checked twice (its body, its origin); a fleet's are
# few and repeat, and parsing them again showed in a conductor's heartbeat profile.
@functools.lru_cache(maxsize=1 << 16)
def split_endpoint(endpoint: str) -> tuple[str, int]:
    """Splits ``host:port`` (IPv6 in brackets) and checks both halves.

    One endpoint has one spelling: a hello's endpoint is compared with the stored one
    (is this agent the one that holds the name?), so another spelling of it (a port
    ``07999``, ``::ffff:127.0.0.1``) would be another agent's endpoint that calls the
    same one. Host names, which DNS reads in any case, are checked here and written in
    lower case by ``canonical_endpoint``."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([^:]*)|([^:\[\]]+):([^:]*)", endpoint)
    if match is None:
        raise ValueError("must be host:port (IPv6 as [addr]:port)")
    host = match.group(1) or match.group(3)
    digits = match.group(2) if match.group(1) is not None else match.group(4)
    # ASCII digits only (int() reads any script's), no leading zero.
    if re.fullmatch(r"[1-9][0-9]{0,4}", digits) is None or int(digits) > 65535:
        raise ValueError("port must be a number between 1 and 65535, without leading zeros")
    port = int(digits)
    if match.group(1) is not None:
        address = ipaddress.IPv6Address(host)
        if address.ipv4_mapped is not None:
            raise ValueError(f"write the IPv4 address {address.ipv4_mapped} as a.b.c.d")
        if address.compressed != host:
            raise ValueError(f"write the IPv6 address as [{address.compressed}] (RFC 5952)")
    elif _is_ipv4(host):
        pass
    elif _resolver_number(host):
        raise ValueError(
            f"{host!r} is not a canonical IPv4 address: write it as four decimal numbers "
            "without leading zeros (a.b.c.d)"
        )
    elif not _HOSTNAME.match(host):
        raise ValueError(f"{host!r} is neither an IP address nor a hostname")
    return host, port


def canonical_endpoint(endpoint: str) -> str:
    """``endpoint`` checked, its host name (if it is one) in lower case."""
    host, port = split_endpoint(endpoint)
    return f"{host.lower()}:{port}" if ":" not in host and host != host.lower() else endpoint


def _resolver_number(host: str) -> bool:
    """Whether the resolver reads ``host`` as a number (``127.1``, ``2130706433``,
    ``0177.0.0.1``, ``0x7f000001``): an address in a form that is not a.b.c.d, which
    one component would call and another would compare as a name. A host name's
    last label is never all digits (RFC 1123, 2.1)."""
    if host.rsplit(".", 1)[-1].isdigit():
        return True
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True
