"""A throwaway OpenStack Placement 16 for the tests: SQLite, noauth2, on loopback.

``scripts/ensure-placement`` installs it into a virtual environment of its own, outside
the repository; without it the Placement tests skip, saying why. Placement serves on a
socket the test bound itself (gunicorn's ``fd://``), so no port is raced for.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.gunicorn_service import gunicorn
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


@contextmanager
def throwaway_placement(
    venv: Path,
    folder: Path,
    database: str | None = None,
    workers: int = 1,
    options: tuple[str, ...] = (),
    sock: socket.socket | None = None,
) -> Iterator[ThrowawayPlacement]:
    """Placement on a fresh SQLite database in ``folder`` (or on ``database``, an empty
    PostgreSQL one), until the block ends; ``options`` go to gunicorn; on ``sock`` if
    given (bound, not yet listening: its URL refuses until Placement is up)."""
    folder.mkdir(parents=True, exist_ok=True)
    # One worker on SQLite: several writers answer "database is locked".
    assert workers == 1 or database is not None, "several workers need PostgreSQL"
    connection = database or f"sqlite:///{folder / 'placement.sqlite'}"
    # Several workers would each migrate the schema at start, racing: it is made first.
    (folder / "placement.conf").write_text(
        "[DEFAULT]\ndebug = False\n"
        "[api]\nauth_strategy = noauth2\n"
        "[placement_database]\n"
        f"connection = {connection}\n"
        f"sync_on_startup = {workers == 1}\n"
    )
    env = {"OS_PLACEMENT_CONFIG_DIR": str(folder)}
    if workers > 1:
        subprocess.run(
            [str(venv / "bin" / "placement-manage"), "--config-dir", str(folder), "db", "sync"],
            check=True,
            capture_output=True,
            timeout=START_SECONDS,
        )
    sock = sock or bound_socket()
    log = folder / "placement.log"
    url = url_of(sock)
    with gunicorn(
        "Placement",
        venv,
        ["-w", str(workers), *options, "placement.wsgi.api:application"],
        sock,
        log,
        env,
        url + "/",
        START_SECONDS,
    ) as process:
        yield ThrowawayPlacement(url, process, log)


def make_root(placement: ThrowawayPlacement, name: str) -> str:
    """The compute node's provider, as nova-compute makes it."""
    with placement.client() as client:
        answer = client.post("/resource_providers", json={"name": name})
        assert answer.status_code == 200, answer.text
        root: str = answer.json()["uuid"]
        generation = answer.json()["generation"]
        traits = {"resource_provider_generation": generation, "traits": ["COMPUTE_ACCELERATORS"]}
        assert client.put(f"/resource_providers/{root}/traits", json=traits).status_code == 200
    return root


def children(placement: ThrowawayPlacement, root: str) -> dict[str, dict[str, Any]]:
    """Each child of ``root`` by name: its uuid, parent, inventory and traits."""
    found: dict[str, dict[str, Any]] = {}
    with placement.client() as client:
        tree = client.get("/resource_providers", params={"in_tree": root}).json()
        for provider in tree["resource_providers"]:
            if provider["uuid"] == root:
                continue
            base = f"/resource_providers/{provider['uuid']}"
            inventories, traits = client.get(base + "/inventories"), client.get(base + "/traits")
            if not (inventories.is_success and traits.is_success):
                continue  # deleted between the two reads: gone
            found[provider["name"]] = {
                "uuid": provider["uuid"],
                "parent": provider["parent_provider_uuid"],
                "inventories": inventories.json()["inventories"],
                "traits": set(traits.json()["traits"]),
            }
    return found
