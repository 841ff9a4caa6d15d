"""The parts of a fleet started together, or in any order, on a fresh database.

A conductor, an api, an agent and its GPU driver are started on a database nobody
has used yet, either all at one instant or one after another in each of the 24
orders, each part only once the one before it has come up. Whatever the order, every
part comes up, the node's first sync stores its whole tree, and no part exits. Parts
that start before the part they talk to wait for it (an agent before its conductor,
a driver before its agent), and parts that start together migrate the database
together (which once killed one of them with "table ... already exists").
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from accel.cli.argv import accel_argv
from accel.cli.fleet_daemons import api, conductor
from accel.cli.node_daemons import agent, driver
from accel.driver.fake_sysfs import build_gpu_server
from accel.internal.schemas import Kind
from tests.integration.fleet import FAST_AGENT, FAST_CONDUCTOR, FAST_DRIVER
from tests.integration.truth import Node, wait_for_truth
from tests.postgres import ThrowawayPostgres
from tests.processes import Cluster, Service, agent_drivers, bound_socket, url_of, wait_until

PARTS = ("conductor", "api", "agent", "driver")
ALL_ORDERS = list(itertools.permutations(PARTS))
# Every order on both backends is 48 fleets; by default each backend runs a sample in
# which each part starts before and after each other part (an order and its reverse)
# and first and last. ACCEL_ALL_START_ORDERS=1 runs all 24.
SAMPLE_ORDERS = [
    ("conductor", "api", "agent", "driver"),
    ("driver", "agent", "api", "conductor"),
    ("api", "driver", "conductor", "agent"),
    ("agent", "conductor", "driver", "api"),
]
ORDERS = ALL_ORDERS if os.environ.get("ACCEL_ALL_START_ORDERS") == "1" else SAMPLE_ORDERS
TOGETHER_ROUNDS = 3


class Fleet:
    """One node's parts on one database, each started when the test says."""

    def __init__(self, cluster: Cluster, database: str, workdir: Path) -> None:
        self.cluster = cluster
        self.database = database
        self.node = Node("node0", build_gpu_server(workdir / "node0"), (Kind.GPU,))
        self.sockets = {part: bound_socket() for part in ("conductor", "api", "agent")}
        self.services: dict[str, Service] = {}

    def url(self, part: str) -> str:
        return url_of(self.sockets[part])

    def start(self, part: str) -> Service:
        sock: socket.socket | None = self.sockets.get(part)
        listen = {"listen_fd": sock.fileno()} if sock is not None else {}
        if part == "conductor":
            argv = accel_argv(conductor, database=self.database, **FAST_CONDUCTOR, **listen)
        elif part == "api":
            argv = accel_argv(api, database=self.database, auth="noauth", **listen)
        elif part == "agent":
            argv = accel_argv(
                agent, conductor=self.url("conductor"), name=self.node.name, **FAST_AGENT, **listen
            )
        else:
            argv = accel_argv(
                driver,
                kind="GPU",
                agent=self.url("agent"),
                sysfs_root=self.node.tree.root,
                **FAST_DRIVER,
            )
        service = self.cluster.spawn(part, argv, sock, self.url(part) if sock else "")
        self.services[part] = service
        if part == "agent":
            self.node.agent = service
        if part == "driver":
            self.node.drivers[Kind.GPU] = service
        return service

    def came_up(self, part: str) -> Callable[[], bool]:
        """Whether ``part`` has come up as far as it can without the parts after it."""
        service = self.services[part]

        def check() -> bool:
            if not service.alive():
                raise AssertionError(f"{part} exited\n{self.cluster.logs()}")
            if part != "driver":
                return service.serves()
            agent = self.services.get("agent")
            if agent is not None and agent.serves():
                return any(d["type"] == "GPU" for d in agent_drivers(agent))
            # No agent to take its hello yet: up once it has tried and is retrying.
            return "hello to agent failed" in service.log_path.read_text()

        return check

    def check_whole(self) -> None:
        """Every part up, the first sync stored, and nobody exited."""
        for part in PARTS:
            wait_until(self.came_up(part), f"{part} up", on_timeout=self.cluster.logs)
        wait_for_truth(self.services["api"], [self.node], self.cluster)
        exited = [part for part, service in self.services.items() if not service.alive()]
        assert exited == [], self.cluster.logs()


def fresh_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'accel.db'}"
    server: ThrowawayPostgres = request.getfixturevalue("postgres")
    return server.new_database()


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("order", ORDERS, ids="-".join)
def test_parts_started_one_after_another_in_any_order(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, order: tuple[str, ...]
) -> None:
    cluster = Cluster(tmp_path)
    try:
        fleet = Fleet(cluster, fresh_database(backend, tmp_path, request), tmp_path)
        for part in order:
            fleet.start(part)
            wait_until(fleet.came_up(part), f"{part} up", on_timeout=cluster.logs)
        fleet.check_whole()
    finally:
        cluster.stop_all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_parts_started_at_one_instant(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    for round_ in range(TOGETHER_ROUNDS):
        workdir = tmp_path / f"round-{round_}"
        workdir.mkdir()
        cluster = Cluster(workdir)
        try:
            fleet = Fleet(cluster, fresh_database(backend, workdir, request), workdir)
            for part in PARTS:
                fleet.start(part)
            fleet.check_whole()
        finally:
            cluster.stop_all()
