"""Running a component's ASGI app on uvicorn, on a socket from accel.sockets.

uvicorn drains in-flight requests on SIGTERM or Ctrl-C. Imported only by the
commands that serve, since uvicorn is slow to import.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import socket
import sys
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from accel.http_protocol import ErrorBody, WireLimits, guarded_protocol
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


def configure_logging(component: str, level: str = "INFO") -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format=f"%(asctime)s {component} %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


class _DrainingServer(uvicorn.Server):
    """uvicorn, except that a clean drain after SIGTERM or Ctrl-C exits with status 0.

    uvicorn re-raises the signal once drained, so the process would die of it; for
    a supervisor (systemd, accel up) a finished drain is a clean exit.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()


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
) -> None:
    """Serves until SIGTERM or SIGINT, then drains in-flight requests.

    Only a service that may sit behind a reverse proxy on its own host (the public
    api) reads X-Forwarded-For and Forwarded from loopback peers. The internal
    services check a hello's endpoint against the socket's peer, which a local
    process could otherwise name as it pleased. An idle connection is kept
    ``keep_alive`` seconds for its client's next request. Connections are held to
    ``accel.http_protocol``'s limits, and its refusals carry ``error_body``.
    """
    limits = WireLimits(error_body, max_connections=connection_cap(raise_file_limit()))
    collect_rarely()
    config = uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        ws="none",
        lifespan="on",
        proxy_headers=behind_proxy,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        timeout_keep_alive=math.ceil(keep_alive),
        server_header=False,
        **(tls.server_options() if tls is not None else {}),
    )
    _DrainingServer(config).run(sockets=[sock])


def connection_cap(file_limit: int) -> int:
    """How many connections a process with ``file_limit`` descriptors takes at once:
    three quarters of them, and never the last ``RESERVED_FILES``, so that a flood of
    connections cannot leave it unable to open its database or call its peers."""
    if file_limit <= 0:  # unlimited
        return WireLimits().max_connections * 16
    return max(MIN_CONNECTIONS, min(file_limit - RESERVED_FILES, file_limit * 3 // 4))
