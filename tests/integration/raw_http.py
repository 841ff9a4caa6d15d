"""HTTP/1.1 over a raw socket, for tests that must send what no client library will:
a URL past httpx's limit, contradictory framing, a head or body that never ends."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any

from tests.processes import Service

READ_TIMEOUT = 10.0


def address(service: Service) -> tuple[str, int]:
    host, _, port = service.url.split("://", 1)[-1].rpartition(":")
    return host, int(port)


def connect(service: Service) -> socket.socket:
    sock = socket.create_connection(address(service), timeout=READ_TIMEOUT)
    sock.settimeout(READ_TIMEOUT)
    return sock


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def read_answer(sock: socket.socket) -> RawAnswer:
    """One answer: its head, then its Content-Length of body (or up to the close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before a whole head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines)
    }
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return RawAnswer(int(status_line.split()[1]), headers, body)


def exchange(service: Service, request: bytes) -> RawAnswer:
    """Sends ``request`` on a new connection and reads the one answer."""
    with connect(service) as sock:
        sock.sendall(request)
        return read_answer(sock)


def closed_by_peer(sock: socket.socket, received: bytearray | None = None) -> bool:
    """Whether the server has closed ``sock``; what it wrote first is read, and kept in
    ``received`` if given."""
    sock.setblocking(False)
    try:
        while True:
            chunk = sock.recv(65536)
            if received is not None:
                received += chunk
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except ConnectionError:
        return True
    finally:
        sock.setblocking(True)


# Linux's TCP states (tcp_states.h) in which the peer has closed or reset.
PEER_GONE = {7, 8}  # TCP_CLOSE, TCP_CLOSE_WAIT


def peer_gone(sock: socket.socket) -> bool:
    """Whether the server has closed or reset ``sock``, read without reading from it
    (so that what the server wrote stays unread)."""
    state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    return state in PEER_GONE


def deaf_reader(service: Service, requests: int) -> socket.socket:
    """A connection that asks ``requests`` answers at once and reads none of them."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
    sock.settimeout(READ_TIMEOUT)
    sock.connect(address(service))
    sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * requests)
    return sock


def wait_closed(sock: socket.socket, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not closed_by_peer(sock):
        if time.monotonic() > deadline:
            raise AssertionError(f"the server kept {what} open for {timeout:g} s")
        time.sleep(0.1)
