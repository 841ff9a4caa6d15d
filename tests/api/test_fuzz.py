"""Fuzzing the public API with schemathesis, against the OpenAPI document it serves.

A real api process on a database holding the example GPU server; every operation
gets a bounded number of generated requests, valid and not. No answer may be a
5xx other than the documented 503 (a bind, a setup or an FPGA programming with no
conductor running), and every answer must match the document.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from accel.api.app import ROUTES
from accel.api.openapi import document
from accel.driver.fake_sysfs import build_gpu_server
from tests.api.test_api import fill
from tests.processes import Cluster, Service

MAX_EXAMPLES = 20


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzzed_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("fuzz")
    database = f"sqlite:///{workdir / 'accel.db'}"
    if request.param == "postgresql":  # stricter about what text and numbers it stores
        database = request.getfixturevalue("postgres").new_database()
    fill(database, build_gpu_server(workdir / "node"))
    cluster = Cluster(Path(workdir))
    try:
        yield cluster.api(database)
    finally:
        cluster.stop_all()


# The document the api serves (test_the_api_serves_this_document checks it is so).
schema = schemathesis.openapi.from_dict(document(ROUTES))


def test_the_api_serves_this_document(fuzzed_api: Service) -> None:
    assert httpx.get(fuzzed_api.url + "/openapi.json", timeout=10).json() == document(ROUTES)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_breaks(case: Any, fuzzed_api: Service) -> None:
    # The document's types are looser than accel's validation (uuids, group syntax,
    # enumerations are checked by the server), so a schema-valid request may fairly
    # be refused with 400: every other check stays on.
    case.call_and_validate(base_url=fuzzed_api.url, excluded_checks=[positive_data_acceptance])
