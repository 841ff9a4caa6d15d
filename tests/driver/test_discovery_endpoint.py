"""``POST /v1/discovery``: from internal version 1.4 a ``wait`` answers with the fresh
result in the same call; older versions start a discovery and answer 202."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from accel.driver.discovery import Discoverer
from accel.driver.fake_sysfs import FakeSysfs
from accel.driver.pci_ids import PciIdDatabase
from accel.driver.service import DriverService, DriverSettings
from accel.internal.schemas import Kind
from accel.internal.versions import VersionRange

TOKEN = "driver-discovery-test-token-0123456789"


def headers(version: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", "Accel-Internal-Version": version}


@pytest.fixture
def gpu_driver(gpu_server: FakeSysfs) -> Iterator[TestClient]:
    settings = DriverSettings(
        discoverer=Discoverer(Kind.GPU, gpu_server.root, names=PciIdDatabase.empty()),
        agent="http://127.0.0.1:9",  # nobody: hellos fail and are retried, harmlessly
        endpoint="127.0.0.1:1",
        token=TOKEN,
        versions=VersionRange(),
        node="node1",
    )
    with TestClient(DriverService(settings).app()) as client:
        yield client


def gpu_addresses(body: dict[str, object]) -> list[str]:
    hardware = body["hardware"]
    assert isinstance(hardware, list)
    return sorted(entry["pci"]["address"] for entry in hardware)


def test_a_waited_discovery_answers_with_its_fresh_result(
    gpu_driver: TestClient, gpu_server: FakeSysfs
) -> None:
    first = gpu_driver.post("/v1/discovery?wait=10", headers=headers("1.4"))
    assert first.status_code == 200
    assert first.headers["Accel-Internal-Version"] == "1.4"
    assert gpu_addresses(first.json()) == [
        "0000:17:00.0",
        "0000:31:00.0",
        "0000:b1:00.0",
        "0000:ca:00.0",
    ]

    gpu_server.remove("0000:b1:00.0")  # the GPU fell off the bus
    second = gpu_driver.post("/v1/discovery?wait=10", headers=headers("1.4"))
    assert second.status_code == 200
    assert second.json()["generation"] > first.json()["generation"]
    assert "0000:b1:00.0" not in gpu_addresses(second.json())


def test_without_a_wait_the_discovery_is_only_started(gpu_driver: TestClient) -> None:
    started = gpu_driver.post("/v1/discovery", headers=headers("1.4"))
    assert started.status_code == 202
    assert started.json()["status"] == "IN-PROGRESS" and started.json()["generation"] >= 1


def test_before_1_4_a_wait_is_an_unknown_parameter(gpu_driver: TestClient) -> None:
    refused = gpu_driver.post("/v1/discovery?wait=10", headers=headers("1.3"))
    assert refused.status_code == 400
    assert "wait" in refused.json()["error"]
    assert gpu_driver.post("/v1/discovery", headers=headers("1.3")).status_code == 202


@pytest.mark.parametrize("wait", ["-1", "61", "soon"])
def test_a_wait_out_of_range_is_refused_by_name(gpu_driver: TestClient, wait: str) -> None:
    refused = gpu_driver.post(f"/v1/discovery?wait={wait}", headers=headers("1.4"))
    assert refused.status_code == 400
    assert "wait" in refused.json()["error"]


def test_an_unchanged_result_is_304_for_its_etag_and_a_change_is_not(
    gpu_driver: TestClient, gpu_server: FakeSysfs
) -> None:
    first = gpu_driver.post("/v1/discovery?wait=10", headers=headers("1.4"))
    etag = first.headers["ETag"]
    conditional = {**headers("1.4"), "If-None-Match": etag}

    again = gpu_driver.post("/v1/discovery?wait=10", headers=conditional)
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == etag  # a new generation, the same content
    polled = gpu_driver.get("/v1/hardware", headers=conditional)
    assert polled.status_code == 304

    gpu_server.remove("0000:b1:00.0")
    changed = gpu_driver.post("/v1/discovery?wait=10", headers=conditional)
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert "0000:b1:00.0" not in gpu_addresses(changed.json())


def test_before_1_4_there_is_no_etag(gpu_driver: TestClient) -> None:
    answer = gpu_driver.get("/v1/hardware", headers={**headers("1.3"), "If-None-Match": "*"})
    assert answer.status_code == 200 and "ETag" not in answer.headers
