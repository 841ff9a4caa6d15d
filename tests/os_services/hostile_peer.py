"""A hostile OpenStack peer on loopback: whatever is asked (Placement, Nova's events,
Keystone's tokens), it answers as ``mode`` says, the way a broken or malicious
service would. Each mode holds a connection for at most ``HOLD_SECONDS``."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

Mode = Literal["hang", "half", "drip", "drip_head", "html", "huge", "deep"]
MODES: tuple[Mode, ...] = ("hang", "half", "drip", "drip_head", "html", "huge", "deep")
HOLD_SECONDS = 60.0
HUGE_BYTES = 64 * 1024 * 1024
DEEP = 200_000
# Between two bytes of a drip: well under any timeout a test sets per read.
DRIP_SECONDS = 0.1


class HostilePeer:
    def __init__(self) -> None:
        self.mode: Mode = "hang"
        self.requests = 0
        self.stop = threading.Event()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(HOLD_SECONDS)
            try:
                conn.recv(65536)  # the request's head (and a small body)
                self.requests += 1
                self._misbehave(conn, self.mode)
            except OSError:
                pass  # the client gave up: as expected

    def _misbehave(self, conn: socket.socket, mode: Mode) -> None:
        deadline = time.monotonic() + HOLD_SECONDS
        if mode == "hang":
            self.stop.wait(HOLD_SECONDS)
        elif mode == "half":
            conn.sendall(_head(1000) + b'{"resource_providers": [')
            self.stop.wait(HOLD_SECONDS)
        elif mode in ("drip", "drip_head"):
            data = _head(4000) + b" " * 4000
            start = 0 if mode == "drip_head" else len(_head(4000))
            conn.sendall(data[:start])
            for byte in data[start:]:
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                conn.sendall(bytes([byte]))
                self.stop.wait(DRIP_SECONDS)
        elif mode == "html":
            body = b"<html><body>It works!</body></html>"
            conn.sendall(_head(len(body), "text/html") + body)
        elif mode == "huge":
            conn.sendall(_head(HUGE_BYTES))
            chunk = b" " * 65536
            for _ in range(HUGE_BYTES // len(chunk)):
                conn.sendall(chunk)
        elif mode == "deep":
            body = b"[" * DEEP + b"]" * DEEP
            conn.sendall(_head(len(body)) + body)


def _head(length: int, content_type: str = "application/json") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


@contextmanager
def hostile_peer() -> Iterator[HostilePeer]:
    peer = HostilePeer()
    thread = threading.Thread(target=peer.serve, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        peer.stop.set()
        peer.listener.close()
        thread.join(5)
