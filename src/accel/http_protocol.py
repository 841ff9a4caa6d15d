"""The HTTP/1.1 protocol every component serves with: uvicorn's httptools protocol,
with bounds on what one connection may hold and JSON answers to protocol errors.

uvicorn as it comes keeps a connection that sends nothing, or never finishes its
head or its body, for ever (its keep-alive timeout starts only after a first
answer); takes any number of connections, until the process runs out of
descriptors; cannot parse a URL over 64 KiB (httptools keeps offsets in 16 bits),
which a bulk delete of 2,000 accelerator requests reaches; and answers every
malformed request with a plain-text 400. Here:

- a request's head must arrive within ``head_timeout`` of the connection (or of its
  first byte, on a kept connection), and its body within ``body_timeout`` of its head;
  a connection that misses either is answered 408 (when something was asked) and
  closed;
- a URL may be up to ``max_url_bytes`` (414 past it), a head up to ``max_head_bytes``
  (431 past it);
- a client that stops reading its answers for ``write_timeout`` is cut off (its
  request's task would otherwise wait on the full socket for ever);
- past ``max_connections`` open connections, a new one is answered 503 and closed;
- every refusal is a JSON body in the component's own error shape, and the
  connection is closed (a request whose framing is in doubt, Transfer-Encoding with
  Content-Length, must not leave bytes behind to be read as another request).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from accel.internal.error_body import INTERNAL_ERRORS
from accel.log_limit import EveryFew

log = logging.getLogger(__name__)

LOG_EVERY = 10.0
# httptools.parse_url keeps offsets and lengths in 16 bits.
PARSE_URL_LIMIT = 65535
ErrorBody = Callable[[int, str], bytes]


@dataclass(frozen=True)
class WireLimits:
    """What one connection may take of a serving process, and how a refusal is said."""

    error_body: ErrorBody = INTERNAL_ERRORS.json
    head_timeout: float = 10.0
    # A body is at most 1 MiB (accel.web.bodies.MAX_BODY_BYTES).
    body_timeout: float = 30.0
    write_timeout: float = 30.0
    # 2,000 accelerator request uuids in one bulk delete's ?arqs= are 74 KB.
    max_url_bytes: int = 100 * 1024
    max_head_bytes: int = 100 * 1024 + 64 * 1024
    max_connections: int = 4096


class _Refused(Exception):
    """Raised in a parser callback to stop the parse; the refusal is kept on the protocol."""


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, within ``limits`` (see the module's docstring)."""

    limits: ClassVar[WireLimits] = WireLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._write_deadline: asyncio.TimerHandle | None = None
        self._reading_head = True
        self._head_bytes = 0
        # The parsed head's size: a head that arrives whole in one read is parsed,
        # and reset, before data_received can count it.
        self._parsed_head = 0
        self._refusal: tuple[int, str] | None = None
        self._running: RequestResponseCycle | None = None

    # Connections

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            cap = self.limits.max_connections
            self._answer(503, f"more than {cap} open connections", quiet=True)
            if _refusals_logged.due():
                log.warning("refusing connections past %d", cap)
            return
        self._arm(self.limits.head_timeout, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._writes_flow()
        # uvicorn tells only the newest request (``self.cycle``) that its client has
        # gone; with requests pipelined, the one running is an older one, which would
        # go on to write to the closed transport.
        running = self._running
        if running is not None and not running.response_complete:
            running.disconnected = True
            running.message_event.set()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_deadline is None:
            self._write_deadline = self.loop.call_later(
                self.limits.write_timeout, self._reader_too_slow
            )

    def resume_writing(self) -> None:
        self._writes_flow()
        super().resume_writing()

    def _writes_flow(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._reading_head:
            if self._deadline is None:  # the first byte of a request on a kept connection
                self._arm(self.limits.head_timeout, self._head_too_slow)
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # As uvicorn does: no component serves WebSockets.
            self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            status, message = self._refusal or (400, f"malformed HTTP request: {exc}")
            self._answer(status, message)
            return
        if self._reading_head and self._head_bytes > self.limits.max_head_bytes:
            self._answer(431, f"request head larger than {self.limits.max_head_bytes} bytes")

    def send_400_response(self, msg: str) -> None:
        self._answer(400, msg)

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsed_head = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._parsed_head += len(name) + len(value) + 4  # ": " and CRLF
        if self._parsed_head > self.limits.max_head_bytes:
            self._refusal = (431, f"request head larger than {self.limits.max_head_bytes} bytes")
            raise _Refused

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._parsed_head += len(url)
        if len(self.url) > self.limits.max_url_bytes:
            self._refusal = (414, f"URL longer than {self.limits.max_url_bytes} bytes")
            raise _Refused

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        self._disarm()
        url = self.url
        if len(url) <= PARSE_URL_LIMIT:
            super().on_headers_complete()
        else:
            # uvicorn parses the URL with httptools: it is given a short stand-in, and
            # the scope is given the real path and query before the request's task,
            # created but not yet run, reads it.
            # Parsed first: a URL that does not parse must fail before a task exists.
            parts = urllib.parse.urlsplit(url)
            raw_path = parts.path or b"/"
            path = self.root_path + urllib.parse.unquote(raw_path.decode("ascii"))
            self.url = b"/"
            super().on_headers_complete()
            self.url = url
            self.scope["path"] = path
            self.scope["raw_path"] = self.root_path.encode("ascii") + raw_path
            self.scope["query_string"] = parts.query
        self._arm(self.limits.body_timeout, self._body_too_slow)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._reading_head = True

    # Deadlines and refusals

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_too_slow(self) -> None:
        self._deadline = None
        answering = self.cycle is None or self.cycle.response_complete
        if self._head_bytes and answering:
            self._answer(408, f"request head not received within {self.limits.head_timeout:g} s")
        else:
            self.transport.close()  # nothing asked yet, or an answer still being sent

    def _body_too_slow(self) -> None:
        self._deadline = None
        if self.cycle is not None and not self.cycle.response_started:
            self._answer(408, f"request body not received within {self.limits.body_timeout:g} s")
        else:
            self.transport.close()

    def _reader_too_slow(self) -> None:
        self._write_deadline = None
        log.info("%s: cut off: its answer unread for %g s", self.client, self.limits.write_timeout)
        # Reset, not closed: a close would leave the unread answer in the kernel's
        # buffers, behind a FIN the client never reads up to.
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _answer(self, status: int, message: str, quiet: bool = False) -> None:
        """Answers ``status`` with a JSON body and closes the connection."""
        self._disarm()
        if self.transport.is_closing():
            return
        if not quiet:
            log.info("%s: %d %s", self.client, status, message)
        body = self.limits.error_body(status, message)
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()


_refusals_logged = EveryFew(LOG_EVERY)


def guarded_protocol(limits: WireLimits) -> type[GuardedHttpProtocol]:
    """The protocol class a server makes its connections with, bound to ``limits``."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"limits": limits})
