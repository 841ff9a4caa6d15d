"""The guarded HTTP protocol's bounds where a socket cannot pin them down: what one
read hands it at once (accel.http_protocol)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from uvicorn.server import ServerState

from accel.http_protocol import GuardedHttpProtocol


class Received(asyncio.Transport):
    """The transport's side of one connection: what the protocol wrote back."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 6666) if name in ("sockname", "peername") else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_a_head_past_the_limit_read_in_one_go_is_refused(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """A loaded server reads a whole 200 KiB head at once, and the parser finishes it
    (and the request) inside that one read: the parser's own count refuses it."""
    config = uvicorn.Config(app=Starlette(), log_config=None)
    protocol = GuardedHttpProtocol(
        config=config, server_state=ServerState(), app_state={}, _loop=loop
    )
    transport = Received()
    protocol.connection_made(transport)
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"h" * (200 * 1024) + b"\r\n\r\n"
    protocol.data_received(head)
    assert transport.written.startswith(b"HTTP/1.1 431 ")
    assert b"request head larger than" in transport.written
    assert transport.closed
    protocol.connection_lost(None)
