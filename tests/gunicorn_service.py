"""An OpenStack service's WSGI app under gunicorn, from its own venv, on a socket the
test bound (tests/placement_service.py, tests/keystone_service.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx


def _serves(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def gunicorn(
    name: str,
    venv: Path,
    options: list[str],
    sock: socket.socket,
    log: Path,
    env: Mapping[str, str],
    ready_url: str,
    start_seconds: float,
) -> Iterator[subprocess.Popen[bytes]]:
    """gunicorn with ``options`` (workers, the app) serving on ``sock`` until the block
    ends; it has started once ``ready_url`` answers 200."""
    argv = [str(venv / "bin" / "gunicorn"), *options, "-b", f"fd://{sock.fileno()}"]
    with open(log, "ab") as output:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            pass_fds=(sock.fileno(),),
            env={**os.environ, **env},
        )
    try:
        deadline = time.monotonic() + start_seconds
        while not _serves(ready_url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{name} did not start\n" + log.read_text()[-4000:])
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        sock.close()
