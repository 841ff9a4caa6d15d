"""Fixtures shared by all tests: fake sysfs trees, databases, real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from accel.driver.fake_sysfs import FakeSysfs, build_gpu_server
from tests.processes import Cluster


@pytest.fixture
def gpu_server(tmp_path: Path) -> FakeSysfs:
    """A fresh copy of the example GPU server's sysfs, free to change."""
    return build_gpu_server(tmp_path / "node")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'accel.db'}"


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    started = Cluster(tmp_path)
    yield started
    failed = getattr(request.node, "failed_call", False)
    started.stop_all()
    if failed:
        print(started.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if call.when == "call" and call.excinfo is not None:
        item.failed_call = True  # type: ignore[attr-defined]
    return report
