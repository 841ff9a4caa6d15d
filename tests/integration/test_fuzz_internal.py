"""Fuzzing the internal API of a live conductor, agent and driver with schemathesis.

Every operation gets a bounded number of generated requests, with the deployment's
token: no answer may be a 5xx, and every one must match the served document.
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

from accel.driver.fake_sysfs import build_gpu_server
from accel.internal.openapi import document
from tests.integration.fleet import FAST_AGENT, FAST_CONDUCTOR, FAST_DRIVER
from tests.processes import TOKEN, Cluster, Service

MAX_EXAMPLES = 20
AUTH = {"Authorization": f"Bearer {TOKEN}", "Accel-Internal-Version": "1.3"}


@pytest.fixture(scope="module")
def components(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    workdir = Path(tmp_path_factory.mktemp("fuzz-internal"))
    cluster = Cluster(workdir)
    try:
        conductor = cluster.conductor(f"sqlite:///{workdir / 'accel.db'}", **FAST_CONDUCTOR)
        agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
        driver = cluster.driver(
            "GPU", agent, build_gpu_server(workdir / "node").root, **FAST_DRIVER
        )
        yield {"conductor": conductor, "agent": agent, "driver": driver}
    finally:
        cluster.stop_all()


@pytest.mark.parametrize("component", ["conductor", "agent", "driver"])
def test_each_component_serves_its_document(components: dict[str, Service], component: str) -> None:
    served = httpx.get(components[component].url + "/openapi.json", timeout=10).json()
    assert served == document(component)


def _fuzz(component: str) -> Any:
    schema = schemathesis.openapi.from_dict(document(component))

    @schema.parametrize()
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def fuzz(case: Any, components: dict[str, Service]) -> None:
        # accel validates more than the document's types say (endpoints must be the
        # caller's own address, for one), so a schema-valid request may be refused.
        case.call_and_validate(
            base_url=components[component].url,
            headers=AUTH,
            excluded_checks=[positive_data_acceptance],
        )

    return fuzz


test_fuzz_conductor = _fuzz("conductor")
test_fuzz_agent = _fuzz("agent")
test_fuzz_driver = _fuzz("driver")
