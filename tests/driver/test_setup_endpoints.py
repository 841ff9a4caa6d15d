"""The driver's setup endpoints, in process: versions, refusals, idempotence, conflicts.

Each test serves a DriverService on a fake tree through Starlette's TestClient; its
hello goes nowhere (no agent listens), which the driver survives by design.
"""

from __future__ import annotations

import asyncio
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from accel.driver.discovery import Discoverer
from accel.driver.fake_sysfs import FakeSysfs
from accel.driver.pci_ids import PciIdDatabase
from accel.driver.service import DriverService, DriverSettings
from accel.driver.setup import OperationRegistry, Plan, SetupConfig
from accel.driver.setup.fpga import parse_tool_template
from accel.errors import NotFound
from accel.internal.schemas import Kind
from accel.internal.setup_schemas import SetupCall
from accel.internal.versions import VersionRange
from accel.states import OperationState
from tests.driver.setup_fakes import E810_PORT_1, Kernel, MigNvml, snapshot

TOKEN = "driver-setup-test-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Accel-Internal-Version": "1.3"}
PF0, PF1, PAC, H100 = "0000:98:00.0", "0000:98:00.1", "0000:86:00.0", "0000:17:00.0"
DEADLINE_SECONDS = 30.0


def driver(kind: Kind, root: Path, setup: SetupConfig, **discovery: Any) -> TestClient:
    discoverer = Discoverer(kind, root, names=PciIdDatabase.empty(), **discovery)
    settings = DriverSettings(
        discoverer=discoverer,
        agent="http://127.0.0.1:9",  # nobody: hellos fail and are retried, harmlessly
        endpoint="127.0.0.1:1",
        token=TOKEN,
        versions=VersionRange(),
        node="node1",
        setup=setup,
    )
    return TestClient(DriverService(settings).app(), headers=HEADERS)


@pytest.fixture
def kernel(gpu_server: FakeSysfs) -> Kernel:
    return Kernel(gpu_server, physical={PF1: E810_PORT_1})


@pytest.fixture
def nic(gpu_server: FakeSysfs, kernel: Kernel) -> Iterator[TestClient]:
    with driver(Kind.NIC, gpu_server.root, SetupConfig(write=kernel)) as client:
        yield client


def setup_call(address: str, setup: dict[str, Any], kind: str = "NIC", **more: Any) -> Any:
    return {
        "operation": str(uuid.uuid4()),
        "kind": kind,
        "address": address,
        "setup": setup,
        **more,
    }


def vfs(count: int, bind: bool = False) -> dict[str, Any]:
    return {"action": "enable_vfs", "num_vfs": count, "bind_vfio": bind}


def finished(client: TestClient, operation: str) -> dict[str, Any]:
    """Polls the operation until it is DONE or FAILED (a safety net, not a speed test)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        answer = client.get(f"/v1/setup/{operation}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        if body["state"] in (OperationState.DONE, OperationState.FAILED):
            return body
        assert time.monotonic() < deadline, f"operation {operation} never finished: {body}"
        time.sleep(0.02)


def nic_hardware(client: TestClient) -> dict[str, Any]:
    entries = client.get("/v1/hardware").json()["hardware"]
    return {entry["pci"]["address"]: entry for entry in entries}


def test_setup_runs_in_the_background_and_rediscovers(nic: TestClient, kernel: Kernel) -> None:
    call = setup_call(PF1, vfs(2, bind=True))
    answer = nic.post("/v1/setup", json=call)
    assert answer.status_code == 202
    assert answer.headers["Accel-Internal-Version"] == "1.3"
    assert answer.json()["state"] in (
        OperationState.PENDING,
        OperationState.RUNNING,
        OperationState.DONE,
    )
    assert answer.json()["operation"] == call["operation"]
    done = finished(nic, call["operation"])
    assert (done["state"], done["error"], done["reboot_required"]) == (
        OperationState.DONE,
        None,
        False,
    )
    assert done["steps"][0].endswith(f"sys/bus/pci/devices/{PF1}/sriov_numvfs")
    assert len(kernel.writes) == 1 + 2 * 3
    # Final means rediscovered: the hardware answer already shows the new VFs.
    entry = nic_hardware(nic)[PF1]
    assert entry["sriov"] == {"total_vfs": 128, "num_vfs": 2}
    assert [(vf["address"], vf["driver"]) for vf in entry["virtual_functions"]] == [
        ("0000:98:10.0", "vfio-pci"),
        ("0000:98:10.1", "vfio-pci"),
    ]
    assert entry["acc_status"]["setup_required"] is False


def test_the_same_operation_again_is_not_run_twice(nic: TestClient, kernel: Kernel) -> None:
    call = setup_call(PF1, vfs(3))
    assert nic.post("/v1/setup", json=call).status_code == 202
    first = finished(nic, call["operation"])
    again = nic.post("/v1/setup", json=call)
    assert (again.status_code, again.json()) == (202, first)
    assert kernel.writes == [(f"sys/bus/pci/devices/{PF1}/sriov_numvfs", "3")]
    # The same uuid with another request is a conflict, not a second operation.
    changed = nic.post("/v1/setup", json={**call, "setup": vfs(4)})
    assert changed.status_code == 409
    assert "different request" in changed.json()["error"]


def test_a_dry_run_says_what_it_would_do_and_changes_nothing(
    nic: TestClient, gpu_server: FakeSysfs, kernel: Kernel
) -> None:
    before = snapshot(gpu_server.root)
    call = setup_call(PF0, vfs(3, bind=True), dry_run=True)
    answer = nic.post("/v1/setup", json=call)
    assert answer.status_code == 202
    body = answer.json()
    assert body["state"] == OperationState.DONE
    numvfs = f"{gpu_server.root}/sys/bus/pci/devices/{PF0}/sriov_numvfs"
    assert body["steps"][:2] == [f"write 0 to {numvfs}", f"write 3 to {numvfs}"]
    assert nic.get(f"/v1/setup/{call['operation']}").json() == body
    assert kernel.writes == [] and snapshot(gpu_server.root) == before


def test_refusals_known_before_running_are_synchronous(
    nic: TestClient, gpu_server: FakeSysfs
) -> None:
    before = snapshot(gpu_server.root)
    over = nic.post("/v1/setup", json=setup_call(PF1, vfs(129)))
    assert over.status_code == 400
    assert over.json()["error"] == (
        f"{PF1} supports at most 128 virtual functions (sriov_totalvfs), not 129"
    )
    wrong_kind = nic.post("/v1/setup", json=setup_call(PF1, vfs(1), kind="QAT"))
    assert wrong_kind.status_code == 400
    assert wrong_kind.json()["error"] == "this driver sets up NIC hardware, not QAT"
    program = nic.post("/v1/setup", json=setup_call(PF1, {"action": "program", "bitstream": "x"}))
    assert program.status_code == 400
    assert "for FPGAs, not NIC hardware" in program.json()["error"]
    vf = nic.post("/v1/setup", json=setup_call("0000:98:01.0", vfs(1)))
    assert vf.status_code == 400
    assert vf.json()["error"].startswith(f"0000:98:01.0 is a virtual function of {PF0}")
    unknown = nic.post("/v1/setup", json=setup_call("0000:17:00.0", vfs(1)))
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "0000:17:00.0 is not NIC hardware this driver discovers"
    escape = nic.post(
        "/v1/setup", json=setup_call(PF1, {"action": "program", "bitstream": "../etc/passwd"})
    )
    assert escape.status_code == 400 and escape.json()["problems"][0]["field"].startswith("setup")
    assert snapshot(gpu_server.root) == before


def test_setup_needs_internal_version_1_3(nic: TestClient) -> None:
    older = nic.post(
        "/v1/setup", json=setup_call(PF1, vfs(1)), headers={"Accel-Internal-Version": "1.2"}
    )
    assert older.status_code == 406
    assert older.json() == {
        "error": "setup needs internal version 1.3",
        "min_version": "1.0",
        "max_version": "1.6",
    }
    progress = nic.get(f"/v1/setup/{uuid.uuid4()}", headers={"Accel-Internal-Version": "1.2"})
    assert progress.status_code == 406


def test_unknown_operations_are_404(nic: TestClient) -> None:
    missing = uuid.uuid4()
    answer = nic.get(f"/v1/setup/{missing}")
    assert answer.status_code == 404
    assert answer.json()["error"] == f"no setup operation {missing} on this driver"
    assert nic.get("/v1/setup/not-a-uuid").status_code == 404


def test_setup_is_refused_without_the_internal_token(nic: TestClient) -> None:
    answer = nic.post(
        "/v1/setup", json=setup_call(PF1, vfs(1)), headers={"Authorization": "Bearer wrong"}
    )
    assert answer.status_code == 401


def test_a_failed_write_fails_the_operation(gpu_server: FakeSysfs) -> None:
    kernel = Kernel(gpu_server, refuse={"sriov_numvfs": 16})  # EBUSY
    with driver(Kind.NIC, gpu_server.root, SetupConfig(write=kernel)) as client:
        call = setup_call(PF0, vfs(2))
        assert client.post("/v1/setup", json=call).status_code == 202
        failed = finished(client, call["operation"])
    assert failed["state"] == OperationState.FAILED
    assert failed["error"].endswith("sriov_numvfs failed: Device or resource busy (EBUSY)")
    assert failed["steps"] == []


def blocking_tool(tmp_path: Path) -> tuple[str, Path, Path]:
    """A tool that waits until the test releases it, then loads an AFU."""
    release, started = tmp_path / "release", tmp_path / "started"
    tool = tmp_path / "program-fpga"
    tool.write_text(
        "#!/bin/sh\n"
        f"touch {started}\n"
        f"while [ ! -e {release} ]; do sleep 0.05; done\n"
        'echo "0badcafe-0000-0000-0000-000000000001" > "$AFU"\n'
    )
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return f"{tool} --device {{address}} {{bitstream}}", release, started


def test_a_second_operation_on_a_busy_device_is_a_conflict(
    tmp_path: Path, gpu_server: FakeSysfs, monkeypatch: pytest.MonkeyPatch
) -> None:
    afu = gpu_server.device_dir(PAC) / "fpga_region/region0/dfl-port.0/afu_id"
    afu.parent.mkdir(parents=True)
    afu.write_text("00000000-0000-0000-0000-000000000000\n")
    monkeypatch.setenv("AFU", str(afu))
    template, release, started = blocking_tool(tmp_path)
    folder = tmp_path / "bitstreams"
    folder.mkdir()
    (folder / "nlb0.gbs").write_text("bitstream")
    setup = SetupConfig(program_tool=parse_tool_template(template), bitstream_dir=folder)
    program = {"action": "program", "bitstream": "nlb0.gbs"}
    with driver(Kind.FPGA, gpu_server.root, setup) as client:
        assert client.get("/v1/hardware").json()["hardware"][0]["acc_status"]["setup_required"]
        first = setup_call(PAC, program, kind="FPGA")
        assert client.post("/v1/setup", json=first).status_code == 202
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not started.exists():
            assert time.monotonic() < deadline, "the tool never started"
            time.sleep(0.02)
        assert (
            client.get(f"/v1/setup/{first['operation']}").json()["state"] == OperationState.RUNNING
        )
        second = client.post("/v1/setup", json=setup_call(PAC, program, kind="FPGA"))
        assert second.status_code == 409
        assert f"operation {first['operation']} is still RUNNING" in second.json()["error"]
        # A dry run changes nothing, so it need not wait.
        dry = client.post("/v1/setup", json=setup_call(PAC, program, kind="FPGA", dry_run=True))
        assert dry.status_code == 202 and dry.json()["steps"][0].startswith("run ")
        release.touch()
        assert finished(client, first["operation"])["state"] == OperationState.DONE
        # Rediscovered: the FPGA shows its function and needs no more setup.
        [entry] = client.get("/v1/hardware").json()["hardware"]
        assert entry["fpga"]["afu_ids"] == ["0badcafe-0000-0000-0000-000000000001"]
        assert entry["acc_status"]["setup_required"] is False
        third = client.post("/v1/setup", json=setup_call(PAC, program, kind="FPGA"))
        assert third.status_code == 202


def test_mig_through_the_endpoint_reports_reboot_required(gpu_server: FakeSysfs) -> None:
    nvml = MigNvml(mode=0, reset_needed=True)
    with driver(Kind.GPU, gpu_server.root, SetupConfig(), nvml=nvml) as client:
        call = setup_call(H100, {"action": "mig_mode", "enabled": True}, kind="GPU")
        assert client.post("/v1/setup", json=call).status_code == 202
        done = finished(client, call["operation"])
        no_profile = client.post(
            "/v1/setup",
            json=setup_call(H100, {"action": "create_mig_instance", "profile": "1g.10gb"}, "GPU"),
        )
    assert (done["state"], done["reboot_required"]) == (OperationState.DONE, True)
    assert nvml.calls == [("nvmlDeviceSetMigMode", 1)]
    assert no_profile.status_code == 400
    assert "MIG mode is not enabled" in no_profile.json()["error"]


def test_the_registry_forgets_the_oldest_finished_operations() -> None:
    async def scenario() -> None:
        async def nothing() -> None:
            return None

        async def no_steps(progress: object) -> None:
            return None

        registry = OperationRegistry(nothing, capacity=2)
        calls = [SetupCall.model_validate(setup_call(PF1, vfs(1), dry_run=True)) for _ in range(3)]
        for call in calls:
            registry.start(call, Plan(["step"], no_steps))
        assert len(registry) == 2
        with pytest.raises(NotFound):
            registry.progress(calls[0].operation)
        assert registry.progress(calls[2].operation).state == OperationState.DONE

    asyncio.run(scenario())


def test_unfinished_operations_are_never_forgotten() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()

        async def nothing() -> None:
            return None

        async def wait(progress: object) -> None:
            await gate.wait()

        registry = OperationRegistry(nothing, capacity=1)
        running = SetupCall.model_validate(setup_call(PF1, vfs(1)))
        registry.start(running, Plan(["wait"], wait))
        registry.start(SetupCall.model_validate(setup_call(PF0, vfs(1))), Plan(["wait"], wait))
        assert len(registry) == 2  # over capacity, but both still run
        assert registry.progress(running.operation).state in (
            OperationState.PENDING,
            OperationState.RUNNING,
        )
        gate.set()
        await registry.close()

    asyncio.run(scenario())
