"""Running a component's ASGI app on uvicorn, on a socket from accel.sockets.

uvicorn drains in-flight requests on SIGTERM or Ctrl-C. Imported only by the
commands that serve, since uvicorn is slow to import. A process may serve more
apps beside its own, each on its own socket (an agent's built-in drivers): they
share its event loop, its signals and its once-a-second tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from accel.http_protocol import ErrorBody, GuardedHttpProtocol, WireLimits, guarded_protocol
from accel.internal.error_body import INTERNAL_ERRORS
from accel.internal.tls import TlsFiles
from accel.sockets import raise_file_limit

GRACEFUL_SHUTDOWN_SECONDS = 10
# Allocations between young collections (CPython's default is 700), and young and
# middle collections before an older generation is looked at (10 and 10).
GC_THRESHOLDS = (50_000, 20, 10)
# Descriptors kept from incoming connections for the database, calls to peers, logs.
RESERVED_FILES = 256
MIN_CONNECTIONS = 64
# How often a serving process refreshes its Date header. uvicorn's own loop wakes
# ten times a second for it and to look for a signal; on an idle node those wake-ups
# were most of its CPU (docs/benchmarks.md, issue 25).
TICK_SECONDS = 1.0
# How long the servers beside a process's own may take to stop once it has.
BESIDE_STOP_SECONDS = 2.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """An app served beside a process's own, on a socket of its own."""

    name: str
    app: ASGIApp
    sock: socket.socket
    tls: TlsFiles | None = None
    # How long an idle connection is kept for its client's next request; None: as
    # long as the process's own server keeps one.
    keep_alive: float | None = None


def configure_logging(component: str, level: str = "INFO") -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format=f"%(asctime)s {component} %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


class _DrainingServer(uvicorn.Server):
    """uvicorn, except that a clean drain after SIGTERM or Ctrl-C exits with status 0,
    and that it ticks once a second (``TICK_SECONDS``), for the servers ``beside`` it
    too, waking at once for a signal.

    uvicorn re-raises the signal once drained, so the process would die of it; for
    a supervisor (systemd, accel up) a finished drain is a clean exit.
    """

    def __init__(self, config: uvicorn.Config, beside: Sequence[_BesideServer] = ()) -> None:
        super().__init__(config)
        self.beside = list(beside)
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        while True:
            # A multiple of ten: uvicorn refreshes the Date header on those.
            if await self.on_tick(counter):
                break
            self._date_beside()
            counter = (counter + 10) % 864000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_SECONDS):
                    await self._wake.wait()
        for server in self.beside:
            server.should_exit = True
            server.stopped.set()

    def _date_beside(self) -> None:
        """Gives the servers beside this one its Date header: one clock read and one
        date formatted a second for all, not one each (their own tick's other work is
        to decide their exit, which is this server's)."""
        date = [header for header in self.server_state.default_headers if header[0] == b"date"]
        for server in self.beside:
            server.server_state.default_headers = date + server.config.encoded_headers

    async def serve_all(self, sockets: list[socket.socket], beside: Sequence[Served]) -> None:
        """Serves this server and ``beside``'s apps in one event loop until a signal."""
        tasks = [
            asyncio.create_task(server.run_beside(served), name=f"serve {served.name}")
            for server, served in zip(self.beside, beside, strict=True)
        ]
        try:
            await self.serve(sockets)
        finally:
            for server in self.beside:
                server.should_exit = True
                server.stopped.set()
            # They began to drain with this server. One that is still starting (its
            # app's startup waits on a scan that hangs) never sees its exit: it is
            # cancelled once the others are done.
            if tasks:
                _, late = await asyncio.wait(tasks, timeout=BESIDE_STOP_SECONDS)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)


class _BesideServer(uvicorn.Server):
    """A server in another's process: its signals and tick are the main server's, and
    its failure (an app that cannot start) is logged, never the process's end."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.stopped = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        await self.stopped.wait()

    async def run_beside(self, served: Served) -> None:
        try:
            await self.serve([served.sock])
        except asyncio.CancelledError:
            raise
        except BaseException:  # uvicorn exits the process (SystemExit) when an app fails
            log.exception("%s stopped; the rest of this process serves on", served.name)
            served.sock.close()  # its callers are refused at once, not left waiting


def collect_rarely() -> None:
    """Sets a serving process's garbage collection for a long-lived heap.

    With CPython's defaults, an object that lives across a few thousand allocations
    (a request waiting on the database, a sync's inventory) is promoted to the old
    generation, and the full collections those promotions set off walk the whole
    heap, and a converging fleet's conductor spent a large share of its CPU in them
    (docs/benchmarks.md). Rarer young collections let such objects die young. What
    the process built before serving (modules, classes, the app) is moved out of the
    collector's sight, never to be garbage. Cycles made later are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve(
    app: ASGIApp,
    sock: socket.socket,
    tls: TlsFiles | None = None,
    *,
    behind_proxy: bool = False,
    keep_alive: float = 5.0,
    error_body: ErrorBody = INTERNAL_ERRORS.json,
    beside: Sequence[Served] = (),
) -> None:
    """Serves until SIGTERM or SIGINT, then drains in-flight requests.

    Only a service that may sit behind a reverse proxy on its own host (the public
    api) reads X-Forwarded-For and Forwarded from loopback peers. The internal
    services check a hello's endpoint against the socket's peer, which a local
    process could otherwise name as it pleased. An idle connection is kept
    ``keep_alive`` seconds for its client's next request. Connections are held to
    ``accel.http_protocol``'s limits, and its refusals carry ``error_body``.
    ``beside``: apps served in this process too, each on its own socket.
    """
    limits = WireLimits(error_body, max_connections=connection_cap(raise_file_limit()))
    collect_rarely()

    def config(
        app: ASGIApp, tls: TlsFiles | None, behind_proxy: bool, keep_alive: float
    ) -> uvicorn.Config:
        return uvicorn_config(
            app,
            guarded_protocol(limits),
            behind_proxy,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            timeout_keep_alive=math.ceil(keep_alive),
            **(tls.server_options() if tls is not None else {}),
        )

    main = config(app, tls, behind_proxy, keep_alive)
    server = _DrainingServer(
        main,
        [
            _BesideServer(config(each.app, each.tls, False, each.keep_alive or keep_alive))
            for each in beside
        ],
    )
    with asyncio.Runner(loop_factory=main.get_loop_factory()) as runner:
        runner.run(server.serve_all([sock], beside))


def uvicorn_config(
    app: ASGIApp, http: type[GuardedHttpProtocol], behind_proxy: bool, **settings: Any
) -> uvicorn.Config:
    """How every accel server runs on uvicorn, the simulator's too: through ``http``
    (accel.http_protocol's limits), no websockets, the app's lifespan, no access log and
    no Server header. ``behind_proxy``: trust X-Forwarded-For (uvicorn would by default)."""
    return uvicorn.Config(
        app,
        http=http,
        ws="none",
        lifespan="on",
        proxy_headers=behind_proxy,
        log_level="warning",
        access_log=False,
        server_header=False,
        **settings,
    )


def connection_cap(file_limit: int) -> int:
    """How many connections a process with ``file_limit`` descriptors takes at once:
    three quarters of them, and never the last ``RESERVED_FILES``, so that a flood of
    connections cannot leave it unable to open its database or call its peers."""
    if file_limit <= 0:  # unlimited
        return WireLimits().max_connections * 16
    return max(MIN_CONNECTIONS, min(file_limit - RESERVED_FILES, file_limit * 3 // 4))
