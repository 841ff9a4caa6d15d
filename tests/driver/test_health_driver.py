"""A driver's health poll, in process on fake trees: evidence changed while it runs
reaches its hardware answer (internal 1.6), VFs have their own health, an older
caller gets entries without it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from starlette.testclient import TestClient

from accel.driver.discovery import Discoverer
from accel.driver.fake_health import healthy, set_aer, set_config, set_link, set_qat_heartbeat
from accel.driver.fake_sysfs import FakeSysfs, build_gpu_server
from accel.driver.health.policy import HealthPolicy
from accel.driver.nvml import NvmlLibrary
from accel.driver.pci_ids import PciIdDatabase
from accel.driver.service import DriverService, DriverSettings
from accel.internal.schemas import Kind
from accel.internal.versions import VersionRange
from tests.driver.health_fakes import DiscoverableNvml
from tests.processes import wait_until

TOKEN = "driver-health-test-token-0123456789"
GPUS = ("0000:17:00.0", "0000:31:00.0", "0000:b1:00.0", "0000:ca:00.0")
QAT, QAT_VF = "0000:6b:00.0", "0000:6b:00.1"


def headers(version: str = "1.6") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", "Accel-Internal-Version": version}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> FakeSysfs:
    tree = build_gpu_server(tmp_path_factory.mktemp("health") / "node")
    for address in GPUS:
        healthy(tree, address, 0x10DE)
    healthy(tree, QAT, 0x8086)
    set_qat_heartbeat(tree, QAT, 0)
    for index in range(1, 5):
        healthy(tree, f"0000:6b:00.{index}", 0x8086, link=False)
    return tree


def serve(kind: Kind, root: Path, nvml: DiscoverableNvml | None = None) -> TestClient:
    settings = DriverSettings(
        discoverer=Discoverer(
            kind, root, names=PciIdDatabase.empty(), nvml=cast(NvmlLibrary | None, nvml)
        ),
        agent="http://127.0.0.1:9",  # nobody: hellos fail and are retried, harmlessly
        endpoint="127.0.0.1:1",
        token=TOKEN,
        versions=VersionRange(),
        node="node1",
        health_interval=0.05,
        health_policy=HealthPolicy(recover_polls=2, failed_hold=0),
    )
    return TestClient(DriverService(settings).app())


@pytest.fixture(scope="module")
def nvml() -> DiscoverableNvml:
    return DiscoverableNvml(GPUS[3])


@pytest.fixture(scope="module")
def gpu_driver(tree: FakeSysfs, nvml: DiscoverableNvml) -> Iterator[TestClient]:
    with serve(Kind.GPU, tree.root, nvml) as client:
        yield client


@pytest.fixture(scope="module")
def qat_driver(tree: FakeSysfs) -> Iterator[TestClient]:
    with serve(Kind.QAT, tree.root) as client:
        yield client


def by_address(client: TestClient, version: str = "1.6") -> dict[str, dict[str, Any]]:
    answer = client.get("/v1/hardware", headers=headers(version))
    assert answer.status_code == 200
    return {entry["pci"]["address"]: entry for entry in answer.json()["hardware"]}


def health_becomes(client: TestClient, address: str, state: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        health: dict[str, Any] = by_address(client)[address]["health"]
        return health if health["state"] == state else None

    return wait_until(check, f"{address} to be {state}")


def checks(health: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["check"]: check for check in health["checks"]}


def test_every_entry_carries_health_and_an_older_caller_gets_none(gpu_driver: TestClient) -> None:
    for address in GPUS:
        health_becomes(gpu_driver, address, "ok")
    assert all("health" not in entry for entry in by_address(gpu_driver, "1.5").values())


def test_fatal_aer_fails_a_gpu_at_once_and_clean_polls_bring_it_back(
    gpu_driver: TestClient, tree: FakeSysfs
) -> None:
    address = GPUS[1]
    health_becomes(gpu_driver, address, "ok")
    before = gpu_driver.get("/v1/hardware", headers=headers()).headers["etag"]
    set_aer(tree, address, "fatal", {"Poisoned TLP": 1})
    failed = health_becomes(gpu_driver, address, "failed")
    assert checks(failed)["aer_fatal"]["value"] == "+1 (Poisoned TLP +1)"
    assert gpu_driver.get("/v1/hardware", headers=headers()).headers["etag"] != before
    assert by_address(gpu_driver)[GPUS[0]]["health"]["state"] == "ok"  # only that one
    recovered = health_becomes(gpu_driver, address, "ok")
    assert checks(recovered)["aer_fatal"]["severity"] == "ok"


def test_a_narrowed_link_degrades_and_config_space_gone_fails(
    gpu_driver: TestClient, tree: FakeSysfs
) -> None:
    address = GPUS[2]
    set_link(tree, address, 8)
    degraded = health_becomes(gpu_driver, address, "degraded")
    assert checks(degraded)["link_width"]["value"] == "x8 of x16"
    set_config(tree, address, None)
    assert checks(health_becomes(gpu_driver, address, "failed"))["config_space"]["severity"] == (
        "failed"
    )
    set_config(tree, address, 0x10DE)
    set_link(tree, address, 16)
    health_becomes(gpu_driver, address, "ok")


def test_an_nvml_xid_fails_the_gpu_and_an_ignored_one_does_not(
    gpu_driver: TestClient, nvml: DiscoverableNvml
) -> None:
    address = GPUS[3]
    health_becomes(gpu_driver, address, "ok")
    nvml.xids.append(45)  # an application's teardown
    nvml.xids.append(79)  # fallen off the bus
    failed = health_becomes(gpu_driver, address, "failed")
    assert checks(failed)["gpu_xid"]["value"] == "xid 79"
    health_becomes(gpu_driver, address, "ok")  # recovery action none: positive evidence


def test_a_failed_vf_does_not_fail_its_pf(qat_driver: TestClient, tree: FakeSysfs) -> None:
    health_becomes(qat_driver, QAT, "ok")
    set_config(tree, QAT_VF, None)

    def vf_failed() -> dict[str, Any] | None:
        entry = by_address(qat_driver)[QAT]
        vf = next(f for f in entry["virtual_functions"] if f["address"] == QAT_VF)
        return entry if vf["health"]["state"] == "failed" else None

    entry = wait_until(vf_failed, "the VF to fail")
    assert entry["health"]["state"] == "ok"
    set_config(tree, QAT_VF, 0x8086)


def test_a_dead_qat_heartbeat_fails_the_device(qat_driver: TestClient, tree: FakeSysfs) -> None:
    health_becomes(qat_driver, QAT, "ok")
    set_qat_heartbeat(tree, QAT, -1)
    failed = health_becomes(qat_driver, QAT, "failed")
    assert checks(failed)["qat_heartbeat"]["value"] == "unresponsive (-1)"
    set_qat_heartbeat(tree, QAT, 0)
    health_becomes(qat_driver, QAT, "ok")
