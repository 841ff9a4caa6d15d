"""A throwaway PostgreSQL server for the tests, in a temp folder, on loopback.

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as the
``postgres`` user through ``runuser``. ``scripts/ensure-postgres`` installs Debian's
server where it is missing; without one the PostgreSQL tests skip, saying why.
"""

from __future__ import annotations

import gc
import glob
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

ADMIN_USER = "accel"


def server_binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _ephemeral_ports() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default


def _free_port() -> int:
    """A free port below the ephemeral range: the server keeps its port across a
    stop and start, and while it is stopped any bind to port 0 on this machine (every
    component the tests start) could otherwise take it."""
    ephemeral = _ephemeral_ports()
    chooser = random.Random()
    for _ in range(100):
        port = chooser.randrange(10_000, max(ephemeral.start, 10_001))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range for PostgreSQL")


class ThrowawayPostgres:
    def __init__(self, binaries: Path, folder: Path, port: int) -> None:
        self.binaries = binaries
        self.folder = folder
        self.port = port
        self._databases = 0

    def url(self, database: str) -> str:
        return f"postgresql://{ADMIN_USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        self._databases += 1
        name = f"test_{self._databases}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def run(self, *argv: str) -> None:
        subprocess.run(
            _as_server_user([str(self.binaries / argv[0]), *argv[1:]]),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def restart(self, mode: str = "fast") -> None:
        """Stops the server (closing every connection) and starts it with its options.

        ``immediate`` stops it as if it had died: no shutdown checkpoint, every backend
        killed at once, crash recovery at the start.
        """
        self._pg_ctl("-m", mode, "-w", "restart")

    def stop(self, mode: str = "fast") -> None:
        """Stops the server; ``start`` brings it back with the same data and options."""
        self._pg_ctl("-m", mode, "-w", "stop")

    def start(self) -> None:
        self._pg_ctl("-w", "-o", self.options(), "start")

    def _pg_ctl(self, *argv: str) -> None:
        # -l: a server it starts must not inherit our pipes, or run() would wait for it
        # (a stop ignores it).
        log = str(self.folder / "server.log")
        self.run("pg_ctl", "-D", str(self.folder / "data"), "-l", log, *argv)

    def options(self) -> str:
        return (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )


def open_connections(url: str) -> list[str]:
    """The psycopg connections to ``url``'s database this process still has open, once
    garbage is collected: after its engines are disposed of, there should be none
    (one left is closed by no one, and psycopg warns when it is collected)."""
    database = url.rsplit("/", 1)[1]
    gc.collect()
    return [
        repr(found)
        for found in gc.get_objects()
        if isinstance(found, psycopg.Connection)
        and not found.closed
        and found.info.dbname == database
    ]


@contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    binaries = server_binaries()
    if binaries is None:
        raise FileNotFoundError("no PostgreSQL server binaries (run scripts/ensure-postgres)")
    folder = Path(tempfile.mkdtemp(prefix="accel-postgres-"))
    if os.geteuid() == 0:
        server_user = pwd.getpwnam("postgres")
        os.chown(folder, server_user.pw_uid, server_user.pw_gid)
    server = ThrowawayPostgres(binaries, folder, _free_port())
    data = folder / "data"
    try:
        server.run(
            "initdb", "-D", str(data), "-U", ADMIN_USER, "-A", "trust", "-E", "UTF8", "--no-sync"
        )
        server.start()
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            server.run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)
