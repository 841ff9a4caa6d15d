"""The database goes away under a running api process, and comes back.

While it is away, every answer that needed it is 503 with Cyborg's error body
(cached reads included; never a plain-text 500), ``/healthz`` says so for load
balancers, and nothing a 503 answered is stored; once it is back the same process
serves again, without a restart.

PostgreSQL is stopped outright. SQLite is taken away two ways, as root can: its
disk made full for the api (RLIMIT_FSIZE of 1 byte: every write fails with "database
or disk is full", as on a full or read-only disk; reads go on), and its file moved
away and replaced by a directory (connections the api holds keep the old file, new
ones cannot open it). Permission bits would not do: root ignores them, and open
descriptors keep the access they were opened with.
"""

from __future__ import annotations

import json
import resource
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.postgres import ThrowawayPostgres
from tests.processes import Cluster, Service, wait_until

PROFILE = {"name": "gpu", "groups": [{"resources:PGPU": "1"}]}
READS = (
    "/v2/devices",  # cached once read: answered before routing
    "/v2/deployables",
    "/accelerator/v2/devices",
    "/v2/device_profiles",
    "/v2/device_profiles/gpu",
    "/v2/accelerator_requests",
    "/v2/attributes",
    "/v2/agents",
    "/v2/conductors",
    "/v2/hardware",
    "/v2/alarms",
    "/v2/operations",
)
LATEST = {"OpenStack-API-Version": "accelerator latest"}


def call(api: Service, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, api.url + path, json=body, headers=LATEST, timeout=30)


def create_arq(api: Service) -> httpx.Response:
    return call(api, "POST", "/v2/accelerator_requests", {"device_profile_name": "gpu"})


def arqs(api: Service) -> set[str]:
    return {arq["uuid"] for arq in call(api, "GET", "/v2/accelerator_requests").json()["arqs"]}


def health(api: Service) -> httpx.Response:
    return httpx.get(api.url + "/healthz", timeout=30)


def warm_up(api: Service) -> str:
    """A profile, an ARQ, and the cached reads rendered; the ARQ's uuid."""
    assert call(api, "POST", "/v2/device_profiles", [PROFILE]).status_code == 201
    created = create_arq(api)
    assert created.status_code == 201, created.text
    for path in READS:
        for _ in range(2):  # the second answer of a cached read comes from the cache
            assert call(api, "GET", path).status_code == 200, path
    assert health(api).json() == {"database": "ok"}
    return str(created.json()["arqs"][0]["uuid"])


def assert_unavailable(answer: httpx.Response) -> None:
    """503 with Cyborg's body, saying what is wrong and no more."""
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/json"
    fault = json.loads(answer.json()["error_message"])
    assert fault["faultcode"] == "Server"
    assert "database" in fault["faultstring"]
    assert "SELECT" not in fault["faultstring"] and "INSERT" not in fault["faultstring"]


def writes(api: Service, arq: str) -> list[httpx.Response]:
    return [
        call(api, "POST", "/v2/device_profiles", [{**PROFILE, "name": "another"}]),
        create_arq(api),
        call(api, "DELETE", f"/v2/accelerator_requests?arqs={arq}"),
    ]


def assert_serves_again(api: Service, kept: set[str]) -> None:
    wait_until(lambda: health(api).status_code == 200, "the api to reach its database again")
    assert health(api).json() == {"database": "ok"}
    for path in READS:
        assert call(api, "GET", path).status_code == 200, path
    # Nothing a 503 answered was stored, and nothing was lost.
    assert arqs(api) == kept
    names = [p["name"] for p in call(api, "GET", "/v2/device_profiles").json()["device_profiles"]]
    assert names == ["gpu"]
    assert create_arq(api).status_code == 201
    # No request died of the outage: a bug would have left its traceback in the log.
    assert api.stop() == 0, api.log()
    assert "Traceback" not in api.log_path.read_text(), api.log()


@pytest.mark.postgres
def test_postgresql_stopped_under_a_running_api(
    cluster: Cluster, postgres: ThrowawayPostgres
) -> None:
    api = cluster.api(postgres.new_database())
    arq = warm_up(api)
    postgres.stop()
    try:
        for path in READS:
            assert_unavailable(call(api, "GET", path))
        for answer in writes(api, arq):
            assert_unavailable(answer)
        assert health(api).status_code == 503
        assert health(api).json() == {"database": "unavailable"}
        # The version document needs no database: it is no health check (see /healthz).
        assert call(api, "GET", "/").status_code == 200
    finally:
        postgres.start()
    assert_serves_again(api, {arq})


@contextmanager
def disk_full(process: Service) -> Iterator[None]:
    """Every write of ``process`` to any file now fails with EFBIG (SQLite: SQLITE_FULL)."""
    pid = process.process.pid
    before = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, before[1]))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, before)


def test_sqlite_on_a_full_disk_under_a_running_api(cluster: Cluster, tmp_path: Path) -> None:
    api = cluster.api(f"sqlite:///{tmp_path / 'accel.db'}")
    arq = warm_up(api)
    with disk_full(api):
        for answer in writes(api, arq):
            assert_unavailable(answer)
        # What is stored can still be read; the health check reads.
        for path in READS:
            assert call(api, "GET", path).status_code == 200, path
        assert health(api).status_code == 200
    assert_serves_again(api, {arq})


@contextmanager
def file_gone(database: Path) -> Iterator[None]:
    """The database file moved away, a directory in its place; put back after."""
    away = database.with_name("moved-away.db")
    database.rename(away)
    database.mkdir()
    try:
        yield
    finally:
        database.rmdir()
        away.rename(database)


def test_sqlite_file_gone_from_under_a_running_api(cluster: Cluster, tmp_path: Path) -> None:
    database = tmp_path / "accel.db"
    api = cluster.api(f"sqlite:///{database}")
    arq = warm_up(api)
    with file_gone(database):
        assert health(api).status_code == 503
        assert health(api).json() == {"database": "unavailable"}
        # Connections the api holds still read the old file, new ones cannot open it:
        # enough requests at once need new ones. Each answer is right or a 503.
        paths = [READS[i % len(READS)] for i in range(64)]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda path: call(api, "GET", path), paths))
        for answer in answers:
            if answer.status_code != 200:
                assert_unavailable(answer)
    assert_serves_again(api, {arq})
