"""``accel up``: the whole stack on this machine, each part its own process.

A conductor, an api, and an agent serving a driver per kind in its own process
(``--driver-processes``: each driver a process of its own), on loopback, with embedded
SQLite and a generated internal token in the state folder. When the first sync is
done it prints where the API is and what was found, then serves until Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import click
import httpx

from accel.cli.argv import accel_argv
from accel.cli.fleet_daemons import api, conductor
from accel.cli.node_daemons import agent, driver
from accel.cli.operator import HARDWARE_COLUMNS, hardware_rows, print_table
from accel.cli.options import (
    agent_down_after_option,
    default_state_dir,
    heartbeat_interval_option,
    option,
    resync_interval_option,
)
from accel.driver.discovery import count_accelerators
from accel.internal.auth import create_token_file, load_token
from accel.internal.schemas import Kind
from accel.internal.versions import HEADER, Feature, format_version
from accel.sockets import bind, endpoint_of
from accel.supervisor import Part, Supervisor

READY_TIMEOUT = 60.0


def choose_tree(sysfs_root: Path | None, fallback: Path | None) -> tuple[Path, str]:
    """The tree to discover from, and why, in words for the user."""
    if sysfs_root is not None:
        return sysfs_root, "as given by --sysfs-root"
    counts = count_accelerators(Path("/"))
    if sum(counts.values()) == 0 and fallback is not None:
        return fallback, "this machine has no accelerators, so the example tree stands in"
    found = ", ".join(f"{n} {kind.value}" for kind, n in counts.items() if n) or "none"
    return Path("/"), f"this machine's own PCI devices ({found})"


def _wait(
    what: str,
    check: Callable[[], bool],
    supervisor: Supervisor,
    timeout: float = READY_TIMEOUT,
) -> None:
    """Waits for ``check`` while keeping the parts alive, so a part that dies at start
    is seen (and restarted) now rather than after a silent timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        supervisor.check()
        time.sleep(0.2)
    for part in supervisor.parts:
        tail = supervisor.log_tail(part)
        if tail:
            click.echo(f"accel up: the last lines of {part.name}'s log:", err=True)
            click.echo("".join(f"    {line}\n" for line in tail), err=True, nl=False)
    raise click.ClickException(f"timed out after {timeout:g}s waiting for {what}")


@click.command()
@option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=default_state_dir,
    help="Database, token and logs live here.",
)
@option(
    "--sysfs-root",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="Discover from this tree instead of this machine's /sys.",
)
@option(
    "--fallback-sysfs-root",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Tree to use when this machine has no accelerators.",
)
@option("--api-listen", default="127.0.0.1:6666", metavar="HOST:PORT")
@option("--name", default=None, help="The node's name (default: the hostname).")
@heartbeat_interval_option
@resync_interval_option
@agent_down_after_option
@option(
    "--driver-processes/--built-in-drivers",
    default=False,
    help="Run each driver as a process of its own, rather than in the agent's.",
)
def up(
    state_dir: Path,
    sysfs_root: Path | None,
    fallback_sysfs_root: Path | None,
    api_listen: str,
    name: str | None,
    heartbeat_interval: float,
    resync_interval: float,
    agent_down_after: float | None,
    driver_processes: bool,
) -> None:
    """Run the whole stack on this machine until Ctrl-C."""
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    token_file = create_token_file(state_dir / "internal-token")
    token = load_token(token_file)
    tree, why = choose_tree(sysfs_root, fallback_sysfs_root)
    click.echo(f"accel up: reading hardware from {tree.resolve()} ({why})")

    conductor_socket = bind("127.0.0.1:0")
    agent_socket = bind("127.0.0.1:0")
    try:
        api_socket = bind(api_listen)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {api_listen} for the API: {exc}") from exc
    conductor_url = f"http://{endpoint_of(conductor_socket)}"
    agent_url = f"http://{endpoint_of(agent_socket)}"
    api_url = f"http://{endpoint_of(api_socket)}"
    database = f"sqlite:///{state_dir / 'accel.db'}"
    common = {"internal_token_file": token_file}
    conductor_part = Part(
        "conductor",
        accel_argv(
            conductor,
            listen_fd=conductor_socket.fileno(),
            database=database,
            **common,
            heartbeat_interval=heartbeat_interval,
            resync_interval=resync_interval,
            agent_down_after=agent_down_after or None,
        ),
        (conductor_socket.fileno(),),
    )
    api_part = Part(
        "api",
        accel_argv(api, listen_fd=api_socket.fileno(), database=database, auth="noauth", **common),
        (api_socket.fileno(),),
    )
    node = node_parts(
        agent_socket,
        conductor_url,
        tree.resolve(),
        token_file,
        heartbeat_interval,
        name,
        driver_processes,
    )

    env = {key: value for key, value in os.environ.items() if not key.startswith("ACCEL_")}
    supervisor = Supervisor(
        [conductor_part, api_part, *node],
        state_dir / "logs",
        env,
        on_event=lambda message: click.echo(f"accel up: {message}"),
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    internal = httpx.Client(timeout=2.0, headers={"Authorization": f"Bearer {token}"})
    try:
        supervisor.start(conductor_part)
        _wait("the conductor", lambda: _answers(internal, conductor_url + "/"), supervisor)
        supervisor.start(api_part)
        _wait("the api", lambda: _answers(internal, api_url + "/"), supervisor)
        for part in node:
            supervisor.start(part)
        click.echo(
            f"accel up: conductor and api answer; {len(Kind)} drivers are starting"
            + (" (each its own process)" if driver_processes else " (in the agent's process)")
        )
        _wait(
            "every driver to say hello",
            lambda: len(_drivers(internal, agent_url)) == len(Kind),
            supervisor,
        )
        click.echo("accel up: every driver said hello; waiting for the first sync")
        _wait("the first sync", lambda: _converged(internal, agent_url, api_url), supervisor)
        _report(internal, api_url, state_dir)
        while not stop.wait(0.5):
            supervisor.check()
    finally:
        click.echo("accel up: stopping")
        supervisor.stop()
        internal.close()
    click.echo("accel up: stopped")


def node_parts(
    agent_socket: socket.socket,
    conductor_url: str,
    tree: Path,
    token_file: Path,
    heartbeat_interval: float,
    name: str | None,
    driver_processes: bool = False,
) -> list[Part]:
    """The node's processes as ``accel up`` runs them: the agent, serving a driver per
    kind in its own process, or with ``driver_processes`` the agent and then a driver
    process per kind.

    bench.node_footprint measures the node from these very parts.
    """
    agent_url = f"http://{endpoint_of(agent_socket)}"
    agent_part = Part(
        "agent",
        accel_argv(
            agent,
            listen_fd=agent_socket.fileno(),
            conductor=conductor_url,
            internal_token_file=token_file,
            heartbeat_interval=heartbeat_interval,
            name=name or None,
            drivers=None if driver_processes else "all",
            sysfs_root=None if driver_processes else tree,
        ),
        (agent_socket.fileno(),),
    )
    if not driver_processes:
        return [agent_part]
    driver_parts = [
        Part(
            f"driver-{kind.value.lower()}",
            accel_argv(
                driver,
                kind=kind.value,
                agent=agent_url,
                listen="127.0.0.1:0",
                sysfs_root=tree,
                internal_token_file=token_file,
                hello_interval=heartbeat_interval,
            ),
        )
        for kind in Kind
    ]
    return [agent_part, *driver_parts]


def _answers(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def _drivers(client: httpx.Client, agent_url: str) -> list[dict[str, Any]]:
    try:
        drivers: list[dict[str, Any]] = client.get(agent_url + "/v1/drivers").json()["drivers"]
    except (httpx.HTTPError, ValueError, KeyError):
        return []
    return drivers


def _converged(client: httpx.Client, agent_url: str, api_url: str) -> bool:
    """Whether the agent heard from every driver and the database holds what it found."""
    try:
        node = client.get(
            agent_url + "/v1/hardware", headers={HEADER: format_version(Feature.GENERATIONS.since)}
        ).json()
        stored = client.get(api_url + "/v2/hardware").json()["hardware"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    drivers = node.get("drivers") or []
    return (
        len(drivers) == len(Kind)
        and all(d["state"] == "ok" for d in drivers)
        and len(stored) == len(node["hardware"])
    )


def _report(client: httpx.Client, api_url: str, state_dir: Path) -> None:
    hardware = client.get(api_url + "/v2/hardware").json()["hardware"]
    print_table(f"found {len(hardware)} devices", HARDWARE_COLUMNS, hardware_rows(hardware))
    click.echo(
        f"accel up: the API is at {api_url} (try: accel hardware list --api-url "
        f"{api_url}); logs in {state_dir / 'logs'}; Ctrl-C stops everything"
    )
