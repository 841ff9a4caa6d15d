"""HTTP under the internal API's client: every call has a timeout and bounded retries
of transport failures, and each peer its own few kept connections.

aiohttp, not httpx: a conductor calls hundreds of agents in a heartbeat interval
when a fleet's hardware changes, and aiohttp spends a fraction of httpx's CPU on
such a call (docs/benchmarks.md, "Figures behind the code"). aiohttp's connector finds a
peer's idle connections by one dict lookup and drops one as soon as the peer closes
it, so a conductor that talks to thousands of agents keeps no dead sockets.

A client made ``shared`` takes the session of its process and event loop for its
token, TLS context, keep-alive and per-peer bound (``SharedSessions``) instead of one
of its own, with its connector, resolver and caches (about 5.6 KiB each,
docs/benchmarks.md, issue 25): the agent's client to its drivers and the drivers'
clients to their agent, whose peers are their node's own, so that the bound per peer
is the node's either way. A client to the conductors keeps its own session: the
simulator's thousands of agents sharing one would share one peer's few connections.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from yarl import URL

from accel.errors import AnswerTooLarge, PeerError
from accel.web.json_bodies import loads

# What a retry may cure: the peer was unreachable, went away mid-answer, or was slow.
TRANSPORT_FAILURES = (aiohttp.ClientError, TimeoutError)
# Failures before the request left this process: the peer cannot have acted on it.
NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# What an answer may weigh unless the call says otherwise: every internal answer but
# a hardware report is a few kilobytes.
DEFAULT_MAX_ANSWER_BYTES = 4 << 20
READ_CHUNK_BYTES = 1 << 16


@functools.lru_cache(maxsize=65536)
def request_url(peer: str, path: str) -> URL:
    """A peer's URL for ``path``, parsed once: a conductor calls the same few paths
    of the same thousands of peers again and again."""
    return URL(peer + path)


@dataclass(frozen=True)
class PeerAnswer:
    """A peer's answer, read in full."""

    url: str
    status_code: int
    headers: Mapping[str, str]  # case-insensitive
    content: bytes

    def json(self) -> Any:
        """The answer's JSON document; a ValueError when it is not one accel takes (a
        peer's answer is bounded in depth as a request's body is)."""
        return loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class SessionKey:
    """What a session is shared on: calls through it cannot tell one holder from another."""

    loop: asyncio.AbstractEventLoop
    token: str
    tls: ssl.SSLContext | None
    keepalive: float
    connections_per_peer: int


class SharedSessions:
    """The process's aiohttp sessions, each held by every client of its key and closed
    when the last one lets it go."""

    def __init__(self) -> None:
        self._held: dict[SessionKey, tuple[aiohttp.ClientSession, int]] = {}

    def acquire(self, key: SessionKey) -> aiohttp.ClientSession:
        session, holders = self._held.get(key) or (None, 0)
        if session is None or session.closed:
            session, holders = _new_session(key), 0
        self._held[key] = (session, holders + 1)
        return session

    async def release(self, key: SessionKey, session: aiohttp.ClientSession) -> None:
        held = self._held.get(key)
        if held is not None and held[0] is session:
            if held[1] > 1:
                self._held[key] = (session, held[1] - 1)
                return
            del self._held[key]
        await session.close()

    def holders(self, key: SessionKey) -> int:
        held = self._held.get(key)
        return held[1] if held is not None else 0


def _new_session(key: SessionKey) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0,  # no bound on all peers together; one per peer
        limit_per_host=key.connections_per_peer,
        keepalive_timeout=key.keepalive,
        ssl=key.tls if key.tls is not None else True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers={"Authorization": f"Bearer {key.token}"},
        # Peers set no cookies, and looking for them showed in every call's profile.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


SESSIONS = SharedSessions()


@functools.lru_cache(maxsize=16)
def _retry_policies(attempts: int) -> dict[bool, dict[str, Any]]:
    """Built once per number of attempts, for every client: the policies are the same
    for every call, and a conductor makes thousands of calls a second while a fleet
    comes up. A call the peer must not act on twice is tried again only if it never
    left."""
    return {
        resend: {
            "stop": stop_after_attempt(attempts),
            "wait": wait_exponential(multiplier=0.1, max=1.0),
            "retry": retry_if_exception_type(TRANSPORT_FAILURES if resend else NOT_SENT),
            "reraise": True,
        }
        for resend in (True, False)
    }


class PeerHttp:
    """A client's calls, through its own session or, ``shared``, its process's for its
    settings (``SESSIONS``), made on the first call (it needs a running event loop)."""

    def __init__(
        self,
        token: str,
        timeout: float,
        attempts: int,
        connections_per_peer: int,
        tls: ssl.SSLContext | None,
        keepalive: float,
        shared: bool = False,
    ) -> None:
        self.timeout = timeout
        self.connect_timeout = min(timeout, 3.0)
        self._token = token
        self._connections_per_peer = connections_per_peer
        self._tls = tls
        self._keepalive = keepalive
        self._retry_policies = _retry_policies(attempts)
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {}
        self._session: aiohttp.ClientSession | None = None
        self._key: SessionKey | None = None
        self._shared = shared

    def _opened(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._key = SessionKey(
                asyncio.get_running_loop(),
                self._token,
                self._tls,
                self._keepalive,
                self._connections_per_peer,
            )
            self._session = SESSIONS.acquire(self._key) if self._shared else _new_session(self._key)
        return self._session

    def _timeout(self, read_timeout: float | None) -> aiohttp.ClientTimeout:
        """Connecting (a free connection included) and each read have their limits;
        a long poll reads for its wait. A whole try is bounded by the two together, so
        a peer that drips its answer a byte at a time holds it no longer than that."""
        timeout = self._timeouts.get(read_timeout)
        if timeout is None:
            read = read_timeout if read_timeout is not None else self.timeout
            timeout = aiohttp.ClientTimeout(
                total=self.timeout + read,
                connect=self.timeout,
                sock_connect=self.connect_timeout,
                sock_read=read,
            )
            if len(self._timeouts) < 64:  # long polls' waits are few, but bound them
                self._timeouts[read_timeout] = timeout
        return timeout

    async def request(
        self,
        method: str,
        peer: str,
        path: str,
        headers: Mapping[str, str],
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
        resend: bool = True,
        max_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> PeerAnswer:
        """The answer to ``path`` of ``peer`` (a base URL), after at most ``attempts``
        tries; PeerError if every try failed in transport. Without ``resend`` (a call
        whose second coming the peer would refuse or act on again), a try that may have
        reached the peer is the last. An answer over ``max_bytes`` is AnswerTooLarge,
        found without reading more than that (and not tried again)."""
        url = request_url(peer, path)
        session = self._opened()
        timeout = self._timeout(read_timeout)
        try:
            async for attempt in AsyncRetrying(**self._retry_policies[resend]):
                with attempt:
                    async with session.request(
                        method,
                        url,
                        headers=headers,
                        data=content,
                        params=params,
                        timeout=timeout,
                        allow_redirects=False,
                    ) as response:
                        return PeerAnswer(
                            str(response.url),
                            response.status,
                            response.headers,
                            await _read_bounded(response, peer, path, max_bytes),
                        )
        except TRANSPORT_FAILURES as exc:
            raise PeerError(peer, f"{method} {path} failed: {plain_reason(exc)}") from exc
        raise AssertionError("unreachable: tenacity either returns or reraises")

    async def aclose(self) -> None:
        """Closes the session with its connections, or a shared one once no client
        holds it."""
        session, key, self._session, self._key = self._session, self._key, None, None
        if session is None or key is None:
            return
        if self._shared:
            await SESSIONS.release(key, session)
        else:
            await session.close()


# aiohttp's words for a failure name its classes, "ssl:default" and socket tuples;
# these are what operators read (a sync's error in /v2/agents). Most specific first.
_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (aiohttp.ClientConnectorCertificateError, "the peer's TLS certificate was refused"),
    (aiohttp.ClientSSLError, "the TLS handshake failed"),
    (aiohttp.ClientConnectorDNSError, "the peer's host name does not resolve"),
    (TimeoutError, "timed out"),  # aiohttp's timeouts are TimeoutErrors too
    (aiohttp.ServerDisconnectedError, "the peer closed the connection without answering"),
    (aiohttp.ClientPayloadError, "the peer's answer was cut off"),
    (aiohttp.ClientResponseError, "the peer's answer is not HTTP"),
    (aiohttp.InvalidURL, "the peer's address is not a valid URL"),
)


def plain_reason(exc: BaseException) -> str:
    """Why a call failed in transport, in an operator's words."""
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _os_reason(exc.os_error, "could not connect")
    if isinstance(exc, aiohttp.ClientOSError):
        return _os_reason(exc, "the connection failed")
    return "the connection failed"


def _os_reason(exc: OSError, fallback: str) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "the peer reset the connection"
    # An errno's own words ("No route to host"), without the call and the address.
    return exc.strerror.lower() if exc.strerror else fallback


async def _read_bounded(
    response: aiohttp.ClientResponse, peer: str, path: str, max_bytes: int
) -> bytes:
    """The answer's body, or AnswerTooLarge as soon as it is known to exceed
    ``max_bytes`` (by its Content-Length, or by what came so far): a peer that sends
    35 MB costs this process ``max_bytes``, not 35 MB and the objects made of them."""
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        response.close()  # the connection still holds the body: never reused
        raise AnswerTooLarge(peer, f"{path} answered more than {max_bytes} bytes ({declared})")
    body = bytearray()
    async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
        body += chunk
        if len(body) > max_bytes:
            response.close()
            raise AnswerTooLarge(peer, f"{path} answered more than {max_bytes} bytes")
    return bytes(body)
