"""accel's daemons for a benchmark: started as processes on free loopback ports,
stopped with SIGTERM, and the ports of a large fleet let go between runs."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.processes import TOKEN


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Runs ``argv`` (accel.cli.argv.accel_argv) with its output in ``log``."""
    with open(log, "ab") as output:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ACCEL_INTERNAL_TOKEN": TOKEN},
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _time_wait_sockets() -> int:
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("tw") + 1])
    return 0


def let_ports_go(limit: float = 120.0) -> None:
    """Waits (at most ``limit``) for the sockets a previous fleet closed to leave
    TIME_WAIT: thousands of simulated nodes take most of the loopback's ephemeral
    ports, and a fleet started right after another ran out of them."""
    started = time.monotonic()
    while _time_wait_sockets() > 1000 and time.monotonic() - started < limit:
        time.sleep(1)
