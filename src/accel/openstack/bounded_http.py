"""HTTP for keystoneauth1 with a whole-answer deadline and a size cap.

requests' timeout bounds each read of the socket, not the answer: a peer that
drips a byte every few seconds (in its head or its body) holds a call for ever, and
a peer that sends gigabytes is read into memory whole. Every OpenStack call accel
makes (Placement, Nova's events, Keystone's tokens) goes through ``BoundedSession``,
the requests Session under keystoneauth's: an answer not whole within ``deadline``
seconds has its socket shut down by one watchdog thread, and the call fails as a
timeout (keystoneauth's ``ConnectTimeout``, which it retries a bounded number of
times); an answer over ``max_bytes`` fails at once (``UnknownConnectionError``).

A redirect is followed (by keystoneauth, a bounded number of hops) only within the
peer's own origin: keystoneauth sends the same headers to wherever ``Location``
points, the token included, so a peer's redirect to another host or port fails the
call (``RedirectRefused``) instead of handing that host accel's token.

Work done under a lease (a conductor's Placement report) sets its end for its thread
(``calls_until``): no call outlives it, and none is begun after it.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection

# No OpenStack answer accel reads comes near this (a node's tree is a few kB).
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
_CHUNK = 64 * 1024


class AnswerTooLarge(requests.RequestException):
    """The peer's answer was larger than accel reads."""


class RedirectRefused(requests.RequestException):
    """The peer redirected elsewhere than its own origin."""


class PastDeadline(Exception):
    """A call that would begin after the deadline its thread set (``calls_until``):
    not made. Not a requests error, so keystoneauth does not retry it."""


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class _Call:
    """One call's deadline and the sockets it reads from."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self.done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def add(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            if not self.expired:
                return
        _shut(sock)  # it was late already

    def expire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    # A read blocked in another thread returns at once: the call sees the peer gone.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread expiring calls at their deadlines, for every session."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Call]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, call: _Call) -> None:
        with self._wake:
            heapq.heappush(self._heap, (call.deadline, next(self._order), call))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="openstack-deadlines", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    _, _, call = heapq.heappop(self._heap)
                    call.expire()
                wait = self._heap[0][0] - now if self._heap else None
                self._wake.wait(wait)


_WATCHDOG = _Watchdog()
_CURRENT = threading.local()
_UNTIL = threading.local()


@contextlib.contextmanager
def calls_until(deadline: float) -> Iterator[None]:
    """Within it, this thread's calls end by ``deadline`` (``time.monotonic()``): one
    in flight then is cut off as a timeout (keystoneauth's retry of it included), and
    none begins after it (``PastDeadline``). Work done under a lease stops with it."""
    outer: float | None = getattr(_UNTIL, "deadline", None)
    _UNTIL.deadline = deadline if outer is None else min(outer, deadline)
    try:
        yield
    finally:
        _UNTIL.deadline = outer


def _watched(connection: HTTPConnection) -> None:
    call: _Call | None = getattr(_CURRENT, "call", None)
    if call is not None:
        call.add(connection.sock)


class _WatchedConnection(HTTPConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _watched(self)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _watched(self)
        return super().getresponse(*args, **kwargs)


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedPool,
            "https": _WatchedHTTPSPool,
        }


class BoundedSession(requests.Session):
    """A requests Session whose every answer is whole within ``deadline`` seconds and
    at most ``max_bytes`` long."""

    def __init__(self, deadline: float, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__()
        self.deadline = deadline
        self.max_bytes = max_bytes
        adapter = _WatchedAdapter()
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        stream = kwargs.pop("stream", False)
        # Each hop is judged here before it is followed: keystoneauth follows them
        # itself, one send each, and requests' own following would not wait for that.
        kwargs["allow_redirects"] = False
        now = time.monotonic()
        until: float | None = getattr(_UNTIL, "deadline", None)
        if until is not None and now >= until:
            raise PastDeadline(f"{request.method} {request.url}: not sent, past its deadline")
        call = _Call(now + self.deadline if until is None else min(now + self.deadline, until))
        outer = getattr(_CURRENT, "call", None)
        _CURRENT.call = call
        _WATCHDOG.watch(call)
        try:
            response = super().send(request, stream=True, **kwargs)
            if response.is_redirect:
                _same_origin(request, response)
            if not stream:
                self._read(response)
            return response
        except requests.RequestException as exc:
            if call.expired:
                raise requests.exceptions.ReadTimeout(
                    f"no whole answer from {request.url} within {call.deadline - now:.3g}s"
                ) from exc
            raise
        finally:
            call.done = True
            _CURRENT.call = outer

    def _read(self, response: requests.Response) -> None:
        """Reads the body as requests would, refusing it past ``max_bytes``."""
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response.close()
            raise AnswerTooLarge(f"{response.url} answered {declared} bytes, over {self.max_bytes}")
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(_CHUNK):
            size += len(chunk)
            if size > self.max_bytes:
                response.close()
                raise AnswerTooLarge(f"{response.url} answered over {self.max_bytes} bytes")
            chunks.append(chunk)
        # What Response.content does itself; the body is read once, here.
        response._content = b"".join(chunks)
        response._content_consumed = True


def _same_origin(request: requests.PreparedRequest, response: requests.Response) -> None:
    """Refuses a redirect out of the peer's origin (scheme, host and port)."""
    asked = str(request.url)
    target = urljoin(asked, response.headers["location"])
    if _origin(target) != _origin(asked):
        response.close()
        raise RedirectRefused(f"{asked} redirected to another origin, {target}: not followed")
