"""A peer's redirect, through the session every OpenStack call uses
(accel.openstack.bounded_http): followed within the peer's own origin, refused out of
it, so that no other host or port is handed accel's token."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from keystoneauth1 import exceptions as ks_exceptions

from accel.openstack.credentials import (
    MAX_REDIRECTS,
    OpenStackCredentials,
    make_adapter,
    make_session,
)

CREDENTIALS = OpenStackCredentials(token="the-token")


class Peer(ThreadingHTTPServer):
    """Redirects as told; every request's path and token kept."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str | None]] = []
        self.elsewhere = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Peer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("X-Auth-Token")))
        where = {
            "/elsewhere": self.server.elsewhere,
            "/moved": f"{self.server.url}/here",
            "/loop": f"{self.server.url}/loop",
        }
        if self.path in where:
            self.send_response(302)
            self.send_header("Location", where[self.path])
            body = b""
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            body = b'{"here": true}'
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def peers() -> Iterator[tuple[Peer, Peer]]:
    asked, other = Peer(), Peer()
    asked.elsewhere = f"{other.url}/stolen"
    threads = [threading.Thread(target=p.serve_forever, daemon=True) for p in (asked, other)]
    for thread in threads:
        thread.start()
    yield asked, other
    for peer, thread in zip((asked, other), threads, strict=True):
        peer.shutdown()
        peer.server_close()
        thread.join(5)


def test_a_redirect_to_another_origin_fails_the_call_and_sends_no_token(
    peers: tuple[Peer, Peer],
) -> None:
    asked, other = peers
    adapter = make_adapter(make_session(CREDENTIALS), CREDENTIALS, "placement", asked.url)
    with pytest.raises(ks_exceptions.ConnectionError, match="another origin"):
        adapter.get("/elsewhere")
    assert other.seen == []  # the other port was never asked, nor handed the token


def test_a_redirect_within_the_peers_origin_is_followed(peers: tuple[Peer, Peer]) -> None:
    asked, _ = peers
    adapter = make_adapter(make_session(CREDENTIALS), CREDENTIALS, "placement", asked.url)
    assert adapter.get("/moved").json() == {"here": True}
    assert asked.seen[-2:] == [("/moved", "the-token"), ("/here", "the-token")]


def test_a_peer_redirecting_to_itself_costs_a_few_hops(peers: tuple[Peer, Peer]) -> None:
    """Each hop has a deadline of its own: the hops are what bound the whole call."""
    asked, _ = peers
    adapter = make_adapter(make_session(CREDENTIALS), CREDENTIALS, "placement", asked.url)
    before = len(asked.seen)
    assert adapter.get("/loop").status_code == 302  # given up: the last redirect, unfollowed
    assert len(asked.seen) - before == 1 + MAX_REDIRECTS
