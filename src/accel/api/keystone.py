"""Validating OpenStack Identity (Keystone) tokens for ``accel api --auth keystone``.

A token is checked with Identity v3's ``GET /v3/auth/tokens``, sending it as both
the caller (``X-Auth-Token``) and the subject (``X-Subject-Token``): Keystone's
default policy lets a token's owner validate it, so accel needs no service
credentials of its own. Answers are cached for a short time in bounded memory;
the Identity service gets a timeout for its whole answer and one retry, and when it
cannot be reached the caller gets 503, never a hang. (keystonemiddleware does the same job for WSGI
apps configured through oslo.config; accel's api is ASGI, so it calls the one
endpoint itself.)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

import httpx
from cachetools import TLRUCache

from accel.api.auth import KNOWN_ROLES, Identity
from accel.errors import Unavailable
from accel.web.json_bodies import loads

log = logging.getLogger(__name__)

# A token document with its catalog is a few kB, tens in a large cloud.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
# Keystone's own limit is 255 (its max_token_size, Fernet's length); a request head
# may carry 160 kB, and each token asked about is a key of the cache (10,000 of them):
# forged tokens that long would hold over a gigabyte. Longer ones are never valid.
MAX_TOKEN_LENGTH = 8192


class KeystoneValidator:
    def __init__(
        self,
        auth_url: str,
        timeout: float = 5.0,
        cache_seconds: float = 60.0,
        max_cached: int = 10_000,
    ) -> None:
        self.auth_url = auth_url.rstrip("/")
        self.cache_seconds = cache_seconds
        self.max_cached = max_cached
        # A token's answer is kept cache_seconds from when Keystone was asked; beyond
        # max_cached, the least recently used go first.
        self._cache: TLRUCache[str, tuple[float, Identity | None]] = TLRUCache(
            max_cached, self._expires, timer=time.monotonic
        )
        self.timeout = timeout
        self._http = httpx.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def identity(self, token: str) -> Identity | None:
        """Who the token belongs to, or None if Keystone does not accept it."""
        if len(token) > MAX_TOKEN_LENGTH:
            return None
        cached = self._cache.get(token)
        if cached is not None:
            return cached[1]
        asked = time.monotonic()
        found, lifetime = await self._validate(token)
        # Timed from the question, not the answer: a revoked token is trusted at most
        # cache_seconds after Keystone last accepted it, and an expired one never
        # (keystonemiddleware's cache honours expires_at too).
        self._cache[token] = (asked + min(self.cache_seconds, lifetime), found)
        return found

    def _expires(self, token: str, cached: tuple[float, Identity | None], now: float) -> float:
        return cached[0]

    async def _validate(self, token: str) -> tuple[Identity | None, float]:
        """Who the token belongs to, and for how many more seconds it is valid."""
        url = f"{self.auth_url}/v3/auth/tokens"
        headers = {"X-Auth-Token": token, "X-Subject-Token": token, "Accept-Encoding": "identity"}
        for attempt in (1, 2):
            try:
                status, content = await self._get(url, headers)
                break
            except (httpx.TransportError, TimeoutError) as exc:
                if attempt == 2:
                    # httpx's words go to the log; the caller learns what failed.
                    log.warning("the Identity service at %s: %r", self.auth_url, exc)
                    raise Unavailable(
                        f"the Identity service at {self.auth_url} cannot be reached"
                    ) from exc
        if status in (401, 403, 404):
            return None, self.cache_seconds
        if status != 200:
            raise Unavailable(f"the Identity service answered {status}")
        try:
            document = loads(content)["token"]
            return identity_of(document), seconds_left(document)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("the Identity service's token document is malformed: %r", exc)
            raise Unavailable(
                "the Identity service answered a token document accel cannot read"
            ) from exc

    async def _get(self, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        """One GET, its whole answer within the timeout and at most MAX_ANSWER_BYTES:
        httpx's timeout bounds each read, and an Identity service dripping a byte at a
        time would hold the caller's request for ever."""
        async with (
            asyncio.timeout(self.timeout),
            self._http.stream("GET", url, headers=headers) as response,
        ):
            # Asked for as sent: httpx inflates each read whole before it can be
            # counted, and 64 kB of gzip inflate to 64 MB.
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding != "identity":
                raise Unavailable(
                    f"the Identity service answered in {encoding!r}, not as asked (identity)"
                )
            content = bytearray()
            async for chunk in response.aiter_raw():
                content += chunk
                if len(content) > MAX_ANSWER_BYTES:
                    raise Unavailable(
                        f"the Identity service answered more than {MAX_ANSWER_BYTES} bytes"
                    )
            return response.status_code, bytes(content)


def seconds_left(token: dict[str, Any]) -> float:
    """Seconds until the token's ``expires_at`` (Identity v3 writes it in UTC); a
    document without one is bounded by the cache's own time alone."""
    expires_at = token.get("expires_at")
    if expires_at is None:
        return float("inf")
    expires = dt.datetime.fromisoformat(str(expires_at).replace("Z", "+00:00"))
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=dt.UTC)
    return (expires - dt.datetime.now(dt.UTC)).total_seconds()


def identity_of(token: dict[str, Any]) -> Identity | None:
    """The caller a validated token describes; None unless it is scoped to a project."""
    project = token.get("project")
    if not isinstance(project, dict) or "id" not in project:
        return None  # Cyborg's rules are project-scoped
    roles = tuple(r["name"] for r in token.get("roles", []) if r.get("name") in KNOWN_ROLES)
    return Identity(user_id=str(token["user"]["id"]), project_id=str(project["id"]), roles=roles)
