"""A conductor's CPU for one round of heartbeats, by connection and transport.

``nodes`` agents are registered and synced in the database beforehand, each with a
stored hardware ETag, so every hello confirms what is stored and the conductor's
work is the heartbeats alone. Each agent says hello once, the round spread evenly
over one heartbeat interval, as a fleet's heartbeats arrive. The load generator is
raw asyncio sockets with the requests built beforehand, cheap beside the
conductor, on the same machine. A round goes over new connections (one each, as
agents made before they kept theirs) or over kept ones (opened before the round),
in plain HTTP and in mutual TLS. The conductor's idle CPU over the same interval
is measured too: its own loops, which every round includes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import time
from pathlib import Path

from sqlalchemy import update

from accel.cli.argv import Setting, accel_argv
from accel.cli.fleet_daemons import conductor as conductor_command
from accel.conductor.agents import Hello, record_hellos
from accel.db.engine import make_engine, migrate, session_factory
from accel.db.models import Agent
from bench.daemons import free_port, spawn, stop
from bench.procfs import cpu_seconds
from bench.profile import Profile
from tests.certificates import make_pki
from tests.processes import TOKEN, wait_until

INTERVAL = 30.0
ETAG = '"stored"'
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _register(database: str, nodes: int) -> list[str]:
    """``nodes`` agents, UP and synced, their inventory's ETag stored; their names."""
    engine = make_engine(database)
    migrate(engine)
    sessions = session_factory(engine)
    now = dt.datetime.now(dt.UTC)
    names = [f"node{index:05d}" for index in range(nodes)]
    for start in range(0, nodes, 500):
        batch = names[start : start + 500]
        record_hellos(
            sessions,
            [Hello(name, _endpoint(start + i), "1.5", now) for i, name in enumerate(batch)],
        )
    with sessions.begin() as session:
        # No sync comes due within the benchmark: only the heartbeats run.
        later = now + dt.timedelta(hours=5)
        session.execute(
            update(Agent).values(inventory_etag=ETAG, last_synced_at=now, next_sync_at=later)
        )
    engine.dispose()
    return names


def _endpoint(index: int) -> str:
    # Never connected to: every hello confirms the stored ETag, so none is synced.
    return f"127.0.0.1:{20000 + index % 40000}"


def _requests(names: list[str], port: int) -> list[bytes]:
    requests = []
    for index, name in enumerate(names):
        body = json.dumps(
            {"status": "READY", "endpoint": _endpoint(index), "name": name, "inventory_etag": ETAG}
        ).encode()
        head = (
            f"POST /v1/hello HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nAccel-Internal-Version: 1.5\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


async def _exchange(connection: Connection, request: bytes) -> None:
    reader, writer = connection
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    body = await reader.readexactly(length)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"a hello was refused: {(head + body)[:300]!r}")


async def _round(
    port: int, requests: list[bytes], kept: bool, tls: ssl.SSLContext | None, profile: Profile
) -> float:
    """One heartbeat round, profiled; the conductor's CPU seconds during it."""
    connections: dict[int, Connection] = {}

    async def connect() -> Connection:
        return await asyncio.open_connection("127.0.0.1", port, ssl=tls)

    async def one(index: int) -> None:
        if not kept:
            connection = await connect()
            await _exchange(connection, requests[index])
            connection[1].close()
            return
        await _exchange(connections[index], requests[index])

    if kept:  # opened, and used once, before the round: as agents that kept theirs
        for start in range(0, len(requests), 200):
            indices = range(start, min(start + 200, len(requests)))
            opened = await asyncio.gather(*(connect() for _ in indices))
            connections.update(zip(indices, opened, strict=True))
            # At once, as an agent does: the conductor closes a connection whose first
            # request does not come within its head deadline.
            await asyncio.gather(*(one(index) for index in indices))
    started = time.monotonic()
    cpu_before = cpu_seconds(profile.pid)
    profile.start()  # after the kept connections' handshakes, which are not the round's
    tasks = []
    for index in range(len(requests)):
        delay = started + index * INTERVAL / len(requests) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    cpu = cpu_seconds(profile.pid) - cpu_before
    profile.stop()
    for _, writer in connections.values():
        writer.close()
    return cpu


def bench_heartbeats(workdir: Path, nodes: int) -> list[str]:
    return _rounds(workdir, nodes, tls=False) + _rounds(workdir, nodes, tls=True)


def _rounds(workdir: Path, nodes: int, tls: bool) -> list[str]:
    """A round over new connections and one over kept ones, with one transport."""
    pki = make_pki(workdir / f"pki-{nodes}") if tls else None
    database = f"sqlite:///{workdir / f'heartbeats-{nodes}-{int(tls)}.db'}"
    names = _register(database, nodes)
    port = free_port()
    tls_settings: dict[str, Setting] = (
        {"tls_cert": pki.cert, "tls_key": pki.key, "tls_ca": pki.ca} if pki else {}
    )
    conductor = spawn(
        accel_argv(
            conductor_command,
            listen=f"127.0.0.1:{port}",
            database=database,
            heartbeat_interval=INTERVAL,
            agent_down_after=3600,
            resync_interval=3600,
            log_level="warning",
            hello_rate=100000,
            hello_burst=100000,
            **tls_settings,
        ),
        workdir / "heartbeats.log",
    )
    rows = []
    try:
        context = pki.client_context() if pki else None
        # Over TLS the root answers only a client with a certificate.
        wait_until(lambda: _root_answers(port, context), "the conductor")
        transport = "mutual TLS" if pki else "plain HTTP"
        if not tls:
            before = cpu_seconds(conductor.pid)
            time.sleep(INTERVAL)
            idle = cpu_seconds(conductor.pid) - before
            rows.append(
                f"| conductor idle for {INTERVAL:.0f} s, {nodes} agents registered "
                f"| {idle:.2f} CPU s | |"
            )
        requests = _requests(names, port)
        for kept in (False, True):
            profile = Profile(conductor.pid)
            cpu = asyncio.run(_round(port, requests, kept, context, profile))
            how = "kept connections" if kept else "a new connection each"
            rows.append(
                f"| heartbeat round: {nodes} hellos over {INTERVAL:.0f} s, {how}, "
                f"{transport} | conductor {cpu:.2f} CPU s, {cpu / nodes * 1e3:.3f} ms "
                f"a hello | {profile.top()} |"
            )
    finally:
        stop(conductor)
    return rows


def _root_answers(port: int, context: ssl.SSLContext | None) -> bool:
    async def ask() -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
            writer.write(b"GET / HTTP/1.1\r\nHost: conductor\r\n\r\n")
            line = await reader.readline()
            writer.close()
        except OSError:  # not listening yet
            return False
        return line.startswith(b"HTTP/1.1 200")

    return asyncio.run(ask())
