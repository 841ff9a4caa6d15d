"""A throwaway OpenStack Placement 16 for the tests: SQLite, noauth2, on loopback.

``scripts/ensure-placement`` installs it into a virtual environment of its own, outside
the repository; without it the Placement tests skip, saying why. Placement serves on a
socket the test bound itself (gunicorn's ``fd://``), so no port is raced for.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.processes import bound_socket, url_of

VERSION = "16.0.0"
# noauth2 lets this token in as an admin; any other token is refused.
TOKEN = "admin"
START_SECONDS = 60.0


def placement_venv() -> Path | None:
    cache = Path(os.environ.get("ACCEL_CACHE") or Path.home() / ".cache" / "accel")
    venv = cache / f"placement-{VERSION}"
    return venv if (venv / ".installed-stamp").exists() else None


class ThrowawayPlacement:
    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log

    def client(self, microversion: str = "1.39") -> httpx.Client:
        """A client as an operator's: admin token, a microversion, a timeout."""
        return httpx.Client(
            base_url=self.url,
            headers={"X-Auth-Token": TOKEN, "OpenStack-API-Version": f"placement {microversion}"},
            timeout=10.0,
        )

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _serves(url: str) -> bool:
    try:
        return httpx.get(url + "/", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def throwaway_placement(venv: Path, folder: Path) -> Iterator[ThrowawayPlacement]:
    """Placement on a fresh SQLite database in ``folder``, until the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "placement.conf").write_text(
        "[DEFAULT]\ndebug = False\n"
        "[api]\nauth_strategy = noauth2\n"
        "[placement_database]\n"
        f"connection = sqlite:///{folder / 'placement.sqlite'}\n"
        "sync_on_startup = True\n"
    )
    sock = bound_socket()
    log = folder / "placement.log"
    # One worker: SQLite with several writers answers "database is locked".
    argv = [str(venv / "bin" / "gunicorn"), "-w", "1"]
    argv += ["-b", f"fd://{sock.fileno()}", "placement.wsgi.api:application"]
    with open(log, "ab") as output:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            pass_fds=(sock.fileno(),),
            env={**os.environ, "OS_PLACEMENT_CONFIG_DIR": str(folder)},
        )
    url = url_of(sock)
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _serves(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("Placement did not start\n" + log.read_text()[-4000:])
            time.sleep(0.1)
        yield ThrowawayPlacement(url, process, log)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        sock.close()
