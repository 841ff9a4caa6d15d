"""Many ASGI apps served by uvicorn in one event loop, each on its own socket.

``uvicorn.Server.serve`` would install signal handlers and tick ten times a second
per server; for thousands of servers in one process the simulator starts each one
with ``startup`` (the app's lifespan, then listening), keeps every server's Date
header fresh from one ticker, and stops them all together.
"""

from __future__ import annotations

import asyncio
import socket
import time
from contextlib import suppress
from email.utils import formatdate

import uvicorn
from starlette.types import ASGIApp

from accel.http_protocol import GuardedHttpProtocol
from accel.serving import uvicorn_config

GRACEFUL_SHUTDOWN_SECONDS = 5


class ServerGroup:
    """Servers started one by one and stopped all at once."""

    def __init__(self) -> None:
        self.servers: list[tuple[uvicorn.Server, socket.socket]] = []
        self._ticker: asyncio.Task[None] | None = None

    async def start(self, app: ASGIApp, sock: socket.socket) -> None:
        """Runs the app's lifespan startup, then serves it on ``sock``."""
        config = uvicorn_config(
            app,
            GuardedHttpProtocol,  # the real components' limits, per server
            False,  # as the real agent and drivers serve
            # uvicorn would set up logging again for each of thousands of servers.
            log_config=None,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self.servers.append((server, sock))
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(), name="date-header")

    async def _tick(self) -> None:
        while True:
            date = [(b"date", formatdate(time.time(), usegmt=True).encode())]
            for server, _ in self.servers:
                server.server_state.default_headers = date + server.config.encoded_headers
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        """Stops listening, drains connections, then runs every lifespan's shutdown."""
        if self._ticker is not None:
            self._ticker.cancel()
            with suppress(asyncio.CancelledError):
                await self._ticker
        await asyncio.gather(*(server.shutdown(sockets=[sock]) for server, sock in self.servers))
        self.servers.clear()
