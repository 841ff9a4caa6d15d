"""A hello may name only its own address as its endpoint, or one in an allowed network."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence

import pytest

from accel.errors import Forbidden
from accel.internal.origin import Network, check_origin, parse_networks


def check(endpoint: str, source: str | None, allowed: Sequence[Network] = ()) -> None:
    asyncio.run(check_origin(endpoint, source, allowed))


@pytest.mark.parametrize("text", [None, "", " , "])
def test_no_networks_given_allows_none(text: str | None) -> None:
    assert parse_networks(text) == ()


def test_networks_are_read_leniently_from_a_comma_separated_list() -> None:
    assert parse_networks("10.1.2.3/8, fd00::/8,,192.168.0.0/16") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
        ipaddress.ip_network("192.168.0.0/16"),
    )


def test_a_network_that_is_not_one_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/8,not-a-network")


def test_an_endpoint_at_the_callers_own_address_is_allowed() -> None:
    check("127.0.0.1:7001", "127.0.0.1")
    check("[::1]:7001", "::1")


def test_the_caller_seen_as_an_ipv4_mapped_address_is_the_same_caller() -> None:
    check("127.0.0.1:7001", "::ffff:127.0.0.1")


def test_a_host_name_is_allowed_when_it_resolves_to_the_caller() -> None:
    check("localhost:7001", "127.0.0.1")


def test_an_endpoint_elsewhere_is_forbidden_and_the_refusal_names_both() -> None:
    with pytest.raises(Forbidden, match=r"127\.0\.0\.2:7001 is not the address .*127\.0\.0\.1"):
        check("127.0.0.2:7001", "127.0.0.1")


def test_an_unknown_caller_may_name_no_endpoint_outside_the_allowed_networks() -> None:
    with pytest.raises(Forbidden):
        check("127.0.0.1:7001", None)
    check("127.0.0.1:7001", None, parse_networks("127.0.0.0/8"))


def test_an_allowed_network_lets_a_caller_name_another_address_in_it() -> None:
    allowed = parse_networks("10.0.0.0/8")
    check("10.9.8.7:7001", "127.0.0.1", allowed)
    with pytest.raises(Forbidden):
        check("11.0.0.1:7001", "127.0.0.1", allowed)


def test_a_caller_that_is_not_an_address_matches_no_endpoint() -> None:
    with pytest.raises(Forbidden):
        check("127.0.0.1:7001", "testclient")


def test_an_endpoint_that_is_not_host_and_port_is_an_error() -> None:
    with pytest.raises(ValueError, match="host:port"):
        check("127.0.0.1", "127.0.0.1")
