"""One conductor name, one live conductor: a second one does not start, a moved one does.

A conductor's name owns its sync leases, and every start gives back the leases of
its name; two live conductors of one name would take each other's syncs and flip
the record the api finds conductors by.
"""

from __future__ import annotations

from typing import Any

import httpx

from accel.cli.argv import accel_argv
from accel.cli.fleet_daemons import conductor
from tests.processes import Cluster, Service, bound_socket, url_of, wait_until


def conductors(api: Service) -> dict[str, dict[str, Any]]:
    answer = httpx.get(api.url + "/v2/conductors", timeout=10).json()
    return {conductor["name"]: conductor for conductor in answer["conductors"]}


def test_a_second_conductor_of_a_live_conductors_name_does_not_start(
    cluster: Cluster, sqlite_url: str
) -> None:
    first = cluster.conductor(sqlite_url, name="conductor-a")
    api = cluster.api(sqlite_url)
    wait_until(lambda: "conductor-a" in conductors(api), "conductor-a recorded")
    sock = bound_socket()
    second = cluster.spawn(
        "conductor",
        accel_argv(conductor, database=sqlite_url, name="conductor-a", listen_fd=sock.fileno()),
        sock,
        url_of(sock),
    )

    wait_until(lambda: not second.alive(), "the second conductor to exit", on_timeout=second.log)
    assert second.process.returncode != 0
    assert f"held by the live conductor at {first.endpoint}" in second.log()
    assert first.alive()
    assert conductors(api)["conductor-a"]["endpoint"] == first.endpoint


def test_a_conductor_started_elsewhere_under_a_dead_ones_name_starts(
    cluster: Cluster, sqlite_url: str
) -> None:
    first = cluster.conductor(sqlite_url, name="conductor-a")
    api = cluster.api(sqlite_url)
    wait_until(lambda: "conductor-a" in conductors(api), "conductor-a recorded")
    first.kill()  # its record still vouches for it, but nothing answers there

    second = cluster.conductor(sqlite_url, name="conductor-a")

    wait_until(
        lambda: conductors(api)["conductor-a"]["endpoint"] == second.endpoint,
        "the record to name the new address",
        on_timeout=second.log,
    )
    assert conductors(api)["conductor-a"]["alive"]
