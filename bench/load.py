"""A small HTTP/1.1 load generator: keep-alive connections on raw asyncio streams.

httpx spends more CPU per request than the api under test, so it would measure
itself; this client only writes a prepared request and reads the status line,
headers and Content-Length bytes back, which one core does tens of thousands of
times a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * share))]

    def summary(self) -> str:
        return (
            f"{self.rate:,.0f} req/s, p50 {self.percentile(0.5) * 1000:.2f} ms, "
            f"p99 {self.percentile(0.99) * 1000:.2f} ms"
        )


def prepare(host: str, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status, body, _ = await read_response_and_close(reader)
    return status, body


async def read_response_and_close(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body, and whether the server closes the connection after it."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    closes = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            closes = True
    body = await reader.readexactly(length) if length else b""
    return status, body, closes


class Connection:
    """A keep-alive connection that opens again when the server closed it (a gunicorn
    sync worker closes after every answer; the reconnect is part of the latency)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        writer.write(request)
        status, body, closes = await read_response_and_close(reader)
        if closes:
            self.close()
        return status, body

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def run_load(
    url: str,
    paths: list[str],
    connections: int,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """GETs every path once, spread over ``connections`` keep-alive connections."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    prepared = [prepare(parts.netloc, "GET", path, headers or {}, b"") for path in paths]
    queue = list(reversed(prepared))
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def worker() -> None:
        connection = Connection(host, port)
        try:
            while queue:
                request = queue.pop()
                started = time.perf_counter()
                status, _ = await connection.exchange(request)
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return LoadResult(len(prepared), time.perf_counter() - started, latencies, statuses)


async def call(
    url: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One request on a fresh connection (for set-up steps and paired calls)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
    try:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        writer.write(prepare(parts.netloc, method, path, all_headers, body))
        return await read_response(reader)
    finally:
        writer.close()


async def run_pairs(
    url: str,
    pairs: int,
    connections: int,
    create: tuple[str, bytes],
    delete_path: Callable[[bytes], str],
) -> LoadResult:
    """``pairs`` create-then-delete pairs: POST ``create`` (path, JSON body), then DELETE
    the path ``delete_path`` makes of the answer. A pair's latency is both calls."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    headers = {"Content-Type": "application/json"}
    post = prepare(parts.netloc, "POST", create[0], headers, create[1])
    remaining = [pairs]
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def worker() -> None:
        connection = Connection(host, port)
        try:
            while remaining[0] > 0:
                remaining[0] -= 1
                started = time.perf_counter()
                status, body = await connection.exchange(post)
                statuses[status] = statuses.get(status, 0) + 1
                if status < 300:
                    delete = prepare(parts.netloc, "DELETE", delete_path(body), {}, b"")
                    status, _ = await connection.exchange(delete)
                    statuses[status] = statuses.get(status, 0) + 1
                latencies.append(time.perf_counter() - started)
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return LoadResult(pairs, time.perf_counter() - started, latencies, statuses)
