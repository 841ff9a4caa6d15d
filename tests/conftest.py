"""Fixtures shared by all tests: fake sysfs trees, databases, real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from accel.driver.fake_sysfs import FakeSysfs, build_gpu_server
from tests.placement_service import ThrowawayPlacement, placement_venv, throwaway_placement
from tests.postgres import ThrowawayPostgres, server_binaries, throwaway_postgres
from tests.processes import Cluster


@pytest.fixture
def gpu_server(tmp_path: Path) -> FakeSysfs:
    """A fresh copy of the example GPU server's sysfs, free to change."""
    return build_gpu_server(tmp_path / "node")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'accel.db'}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    """One throwaway PostgreSQL server for the whole run; each test gets its own database."""
    if server_binaries() is None:
        pytest.skip("no PostgreSQL server binaries here (scripts/ensure-postgres installs them)")
    with throwaway_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A fresh, empty database on each backend accel supports."""
    if request.param == "sqlite":
        return sqlite_url
    server: ThrowawayPostgres = request.getfixturevalue("postgres")
    return server.new_database()


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    started = Cluster(tmp_path)
    yield started
    failed = getattr(request.node, "failed_call", False)
    started.stop_all()
    if failed:
        print(started.logs())


# What a module's tests start, heaviest first: whole stacks of processes (seconds to
# a minute a test), then single servers, then nothing.
_STACKS = frozenset({"cluster"})
_SERVERS = frozenset({"placement", "keystone", "postgres"})


def _weight(item: pytest.Item) -> int:
    fixtures = set(getattr(item, "fixturenames", ()))
    if "/integration/" in item.nodeid or fixtures & _STACKS:
        return 2
    if "/os_services/" in item.nodeid or "/nova_code/" in item.nodeid or fixtures & _SERVERS:
        return 1
    return 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules that start processes first, each module's tests kept together and in
    their order (module-scoped fixtures start once per worker).

    make test runs xdist's worksteal: a worker that runs dry takes half of what
    another has left, from the end of its queue. With the long modules first, what
    is left at the end is short, so neither worker waits long for the other.
    """
    weights: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        weights[module] = max(weights.get(module, 0), _weight(item))
    items.sort(key=lambda item: -weights[item.nodeid.split("::")[0]])


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if call.when == "call" and call.excinfo is not None:
        item.failed_call = True  # type: ignore[attr-defined]
    return report


@pytest.fixture(scope="module")
def placement(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawayPlacement]:
    """One real Placement 16 (SQLite, noauth2) per test module."""
    venv = placement_venv()
    if venv is None:
        pytest.skip("no Placement here (scripts/ensure-placement installs it)")
    with throwaway_placement(venv, tmp_path_factory.mktemp("placement")) as server:
        yield server
