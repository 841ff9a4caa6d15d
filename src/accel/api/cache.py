"""Rendered answers for the api's hottest reads, true as of the inventory generation.

A cached read costs one integer read (the generation, see accel.db.generation) and a
dictionary look-up instead of a query, thousands of objects and their JSON. Every
entry is labelled with the generation it was rendered under, and the generation is
read after the request arrived, so a change committed before a request is always in
its answer. Keys hold everything an answer depends on (path, query, microversion,
the host the links name); no cached answer depends on who asks, and each entry names
the policy rule of the route that rendered it (accel.api.routing.CachedRead), which
the caller's roles must pass before it is shown. Answers carry an ETag (a hash of
the body), so a client that sends If-None-Match gets 304 while the content is the
same, even across generations that changed something else. ``Rendered.send`` is that
answer, whether the request was routed or answered before routing
(accel.api.fast_reads).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from cachetools import LRUCache
from sqlalchemy import Engine, text
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Scope, Send

from accel.db.generation import GENERATION_SQL

MAX_CACHED_BYTES = 64 << 20
# Renders a cached read's body; called only when no true entry is stored.
Render = Callable[[], Awaitable[bytes]]


@dataclass(frozen=True)
class Rendered:
    generation: int
    # The policy rule of the route that rendered it: who may be shown it.
    rule: str
    etag: str
    body: bytes

    async def send(self, scope: Scope, send: Send) -> None:
        """The answer to a cached read: 304 while the request's If-None-Match names
        this ETag, else the body. Sent as raw messages: no Response is built."""
        etag = self.etag.encode()
        if not_modified(Headers(scope=scope), self.etag):
            await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", etag)]})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [
            (b"content-length", str(len(self.body)).encode()),
            (b"content-type", b"application/json"),
            (b"etag", etag),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


class GenerationWatch:
    """Reads the inventory generation, fresh for every caller.

    SQLite answers from a connection of its own in microseconds, on the event loop.
    A server database is read in a worker thread, and callers share reads: whoever
    arrives while a read runs waits for the next one, which starts after it arrived.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sqlite: sqlite3.Connection | None = None
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database and database != ":memory:":
            # A connection of its own, outside the engine's pool (which closes the
            # connections it lends once they come back); autocommit, so every read
            # sees the last commit. WAL readers never wait for writers.
            self._sqlite = sqlite3.connect(
                database, isolation_level=None, check_same_thread=False, timeout=1.0
            )
        self._next: asyncio.Future[int] | None = None
        self._reading = False

    async def current(self) -> int:
        if self._sqlite is not None:
            row = self._sqlite.execute(GENERATION_SQL).fetchone()
            return int(row[0]) if row else 0
        future = self._next
        if future is None:
            future = self._next = asyncio.get_running_loop().create_future()
            if not self._reading:
                self._start_read()
        return await asyncio.shield(future)

    def _start_read(self) -> None:
        future, self._next = self._next, None
        assert future is not None
        self._reading = True
        asyncio.get_running_loop().create_task(self._read_into(future))

    async def _read_into(self, future: asyncio.Future[int]) -> None:
        try:
            value = await anyio.to_thread.run_sync(self._read_blocking)
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(value)
        finally:
            self._reading = False
            if self._next is not None:
                self._start_read()

    def _read_blocking(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.scalar(text(GENERATION_SQL)) or 0)

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def not_modified(headers: Headers, etag: str) -> bool:
    """If-None-Match names this ETag (weak comparison, as RFC 9110 asks for GET). A
    request may split the list over several field lines: they are one list (RFC 9110
    5.3), so a match on the second line counts as on the first."""
    header = ",".join(headers.getlist("if-none-match"))
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def request_key(scope: Scope) -> Hashable:
    """Everything a cached answer depends on, read straight from the request: the
    path and raw query (only valid requests are ever stored), the scheme and host
    its links name, and the microversion."""
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    server = scope.get("server")
    return (
        scope["path"],
        scope["query_string"],
        scope.get("scheme"),
        host,
        tuple(server) if server else None,
        scope.get("state", {}).get("microversion"),
    )


class ResponseCache:
    """Rendered JSON bodies by request key, the least recently used dropped beyond a
    byte budget. ``watch`` is attached when the app starts (it needs the database)."""

    def __init__(self, max_bytes: int = MAX_CACHED_BYTES) -> None:
        self.watch: GenerationWatch | None = None
        self.max_bytes = max_bytes
        # An entry weighs its body's bytes; the least recently used go first.
        self._entries: LRUCache[Hashable, Rendered] = LRUCache(max_bytes, _body_bytes)
        # One rendering per key and generation at a time; others wait for it.
        self._rendering: dict[tuple[Hashable, int], asyncio.Future[Rendered]] = {}

    async def _generation(self) -> int:
        assert self.watch is not None, "the cache is watched while the app serves"
        return await self.watch.current()

    def stored(self, key: Hashable) -> Rendered | None:
        """The entry for ``key``, true or not: see ``is_current``. Looking it up counts
        as its use (LRUCache.get)."""
        return self._entries.get(key)

    async def is_current(self, entry: Rendered) -> bool:
        """Whether ``entry`` is true as of now."""
        return entry.generation == await self._generation()

    async def rendered(self, scope: Scope, rule: str, render: Render) -> Rendered:
        """The entry answering the request of ``scope``, rendered by ``render`` (under
        the route's policy ``rule``) when stale or missing."""
        key = request_key(scope)
        generation = await self._generation()
        entry = self._entries.get(key)
        if entry is not None and entry.generation == generation:
            return entry
        return await self._render(key, generation, rule, render)

    async def _render(self, key: Hashable, generation: int, rule: str, render: Render) -> Rendered:
        running = self._rendering.get((key, generation))
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Rendered] = asyncio.get_running_loop().create_future()
        self._rendering[(key, generation)] = future
        try:
            body = await render()
            entry = Rendered(generation, rule, etag_of(body), body)
            self._store(key, entry)
            future.set_result(entry)
            return entry
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marked as retrieved: nobody else may be waiting
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._rendering[(key, generation)]

    def _store(self, key: Hashable, entry: Rendered) -> None:
        self._entries.pop(key, None)
        if len(entry.body) <= self.max_bytes:  # a larger one is served, never kept
            self._entries[key] = entry


def _body_bytes(entry: Rendered) -> int:
    return len(entry.body)


def cache(request: Request) -> ResponseCache:
    found: ResponseCache = request.app.state.cache
    return found


def json_bytes(document: Any) -> bytes:
    """JSON exactly as Starlette's JSONResponse writes it, so cached bodies are the same."""
    return json.dumps(
        document, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")
