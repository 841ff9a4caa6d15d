"""Setup end to end: the public API asks, the conductor drives, the driver acts on sysfs.

Real processes on loopback; the node is a fake sysfs tree, so the test plays the
kernel's part only where a real kernel would (creating VF links after a write).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from accel.cli.argv import Setting
from accel.driver.fake_sysfs import FakeFunction, FakeSysfs
from accel.states import OperationState
from tests.integration.fleet import FAST_AGENT, FAST_DRIVER, get, hardware
from tests.processes import Cluster, Service, run_accel, wait_until

# Resyncs an hour apart: hardware that changes after setup shows only if setup resyncs.
SLOW_RESYNC_CONDUCTOR: dict[str, Setting] = {"heartbeat_interval": 0.5, "resync_interval": 3600}
IDLE_QAT = "0000:70:00.0"  # a QAT PF with 16 possible VFs and none enabled
IDLE_QAT_PF = FakeFunction(
    IDLE_QAT, 0x8086, 0x4940, 0x0B4000, numa_node=1, driver="4xxx", iommu_group=41
)


def qat_hardware(api: Service, address: str) -> dict[str, Any]:
    [found] = [h for h in hardware(api) if h["pci"]["address"] == address]
    return found


def node(cluster: Cluster, sqlite_url: str, tree: FakeSysfs, **driver_settings: Setting) -> Service:
    conductor = cluster.conductor(sqlite_url, **SLOW_RESYNC_CONDUCTOR)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    cluster.driver("QAT", agent, tree.root, **FAST_DRIVER, **driver_settings)
    wait_until(lambda: len(hardware(api)) == 2, "both QAT cards in the API")
    return api


def setup(api: Service, device: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{api.url}/v2/devices/{device}/setup", json=body, timeout=30)


def finished(api: Service, operation: str) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        found: dict[str, Any] = get(api, f"/v2/operations/{operation}")["operation"]
        return found if found["state"] in (OperationState.DONE, OperationState.FAILED) else None

    return wait_until(final, f"operation {operation} to finish")


def test_enabling_vfs_writes_sysfs_and_the_change_reaches_the_api(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    api = node(cluster, sqlite_url, gpu_server)
    before = qat_hardware(api, IDLE_QAT)
    assert before["acc_status"]["setup_required"] is True

    answer = setup(api, before["uuid"], {"action": "enable_vfs", "num_vfs": 4})
    assert answer.status_code == 202, answer.text
    operation = answer.json()["operation"]
    assert answer.headers["location"] == f"/v2/operations/{operation['uuid']}"
    assert (operation["device_uuid"], operation["action"]) == (before["uuid"], "enable_vfs")
    assert operation["requested_by"]  # who asked is kept with what was asked

    done = finished(api, operation["uuid"])
    assert done["state"] == OperationState.DONE, done
    assert (gpu_server.device_dir(IDLE_QAT) / "sriov_numvfs").read_text().strip() == "4"
    assert done["reboot_required"] is False and done["steps"]
    # The conductor resynced the node at once: the new count is in the inventory.
    wait_until(lambda: qat_hardware(api, IDLE_QAT)["sriov"]["num_vfs"] == 4, "the new VF count")

    # The kernel's part: the write creates the VFs. Then bind them to vfio-pci, which
    # leaves the count alone and so changes nothing but the VFs' drivers.
    vfs = [f"0000:70:00.{n}" for n in range(1, 5)]
    gpu_server.add_virtual_functions(IDLE_QAT_PF, 0x4941, vfs, driver="4xxx_vf")
    answer = setup(api, before["uuid"], {"action": "enable_vfs", "num_vfs": 4, "bind_vfio": True})
    assert answer.status_code == 202, answer.text
    assert finished(api, answer.json()["operation"]["uuid"])["state"] == OperationState.DONE
    for vf in vfs:
        assert (gpu_server.device_dir(vf) / "driver_override").read_text().strip() == "vfio-pci"
    assert (gpu_server.sys / "bus/pci/drivers/4xxx_vf/unbind").read_text().strip() == vfs[-1]
    assert (gpu_server.sys / "bus/pci/drivers_probe").read_text().strip() == vfs[-1]
    # The second operation's resync saw the VFs: each is now its own deployable.
    wait_until(
        lambda: len(qat_hardware(api, IDLE_QAT).get("virtual_functions") or []) == 4,
        "the new VFs in the inventory",
    )
    names = {d["name"] for d in get(api, "/v2/deployables")["deployables"]}
    assert {f"node1_{vf}" for vf in vfs} <= names

    listed = get(api, "/v2/operations", device_uuid=before["uuid"])["operations"]
    assert len(listed) == 2 and listed[-1]["uuid"] == operation["uuid"]


def test_a_dry_run_says_what_it_would_do_and_changes_nothing(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    api = node(cluster, sqlite_url, gpu_server)
    device = qat_hardware(api, IDLE_QAT)["uuid"]
    answer = setup(api, device, {"action": "enable_vfs", "num_vfs": 8, "dry_run": True})
    assert answer.status_code == 202, answer.text
    done = finished(api, answer.json()["operation"]["uuid"])
    assert (done["state"], done["dry_run"]) == (OperationState.DONE, True)
    assert any("sriov_numvfs" in step for step in done["steps"]), done["steps"]
    assert (gpu_server.device_dir(IDLE_QAT) / "sriov_numvfs").read_text().strip() == "0"


def test_bad_requests_are_refused_with_a_reason_and_store_nothing(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    api = node(cluster, sqlite_url, gpu_server)
    device = qat_hardware(api, IDLE_QAT)["uuid"]

    too_many = setup(api, device, {"action": "enable_vfs", "num_vfs": 17})
    assert too_many.status_code == 400
    assert "sriov_totalvfs" in too_many.json()["error_message"]
    wrong_kind = setup(api, device, {"action": "mig_mode", "enabled": True})
    assert wrong_kind.status_code == 400
    assert "QAT" in wrong_kind.json()["error_message"]
    unknown = setup(api, device, {"action": "format_disk"})
    assert unknown.status_code == 400
    missing = setup(api, "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", {"action": "enable_vfs"})
    assert missing.status_code == 400  # num_vfs is required before any lookup
    nowhere = setup(
        api, "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", {"action": "enable_vfs", "num_vfs": 1}
    )
    assert nowhere.status_code == 404

    assert get(api, "/v2/operations")["operations"] == []
    assert (gpu_server.device_dir(IDLE_QAT) / "sriov_numvfs").read_text().strip() == "0"


def test_a_second_operation_on_a_busy_device_is_a_conflict(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, **SLOW_RESYNC_CONDUCTOR)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    driver = cluster.driver("QAT", agent, gpu_server.root, **FAST_DRIVER)
    wait_until(lambda: len(hardware(api)) == 2, "both QAT cards in the API")
    device = qat_hardware(api, IDLE_QAT)["uuid"]

    driver.pause()  # the first operation cannot finish while the driver is stopped
    first = setup(api, device, {"action": "enable_vfs", "num_vfs": 2})
    assert first.status_code == 202
    second = setup(api, device, {"action": "enable_vfs", "num_vfs": 3})
    assert second.status_code == 409
    assert first.json()["operation"]["uuid"] in second.json()["error_message"]

    driver.resume()
    assert finished(api, first.json()["operation"]["uuid"])["state"] == OperationState.DONE
    third = setup(api, device, {"action": "enable_vfs", "num_vfs": 3})
    assert third.status_code == 202
    assert finished(api, third.json()["operation"]["uuid"])["state"] == OperationState.DONE
    # 2 -> 3 goes through 0, as the kernel requires.
    assert (gpu_server.device_dir(IDLE_QAT) / "sriov_numvfs").read_text().strip() == "3"


def test_a_driver_too_old_for_setup_fails_the_operation_and_says_why(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    api = node(cluster, sqlite_url, gpu_server, internal_version_max="1.2")
    device = qat_hardware(api, IDLE_QAT)["uuid"]
    answer = setup(api, device, {"action": "enable_vfs", "num_vfs": 2})
    assert answer.status_code == 202
    done = finished(api, answer.json()["operation"]["uuid"])
    assert done["state"] == OperationState.FAILED
    assert "1.2" in done["error"] and "1.3" in done["error"], done["error"]
    assert (gpu_server.device_dir(IDLE_QAT) / "sriov_numvfs").read_text().strip() == "0"


def test_the_cli_runs_an_action_follows_it_and_lists_it(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    api = node(cluster, sqlite_url, gpu_server)
    device = qat_hardware(api, IDLE_QAT)["uuid"]

    ran = run_accel("setup", device, "--enable-vfs", "6", "--api-url", api.url, "--json")
    assert ran.returncode == 0, ran.stderr
    operation = json.loads(ran.stdout)
    assert (operation["state"], operation["params"]["num_vfs"]) == (OperationState.DONE, 6)
    assert (gpu_server.device_dir(IDLE_QAT) / "sriov_numvfs").read_text().strip() == "6"

    listed = run_accel("operations", "list", "--api-url", api.url, "--json")
    assert [o["uuid"] for o in json.loads(listed.stdout)] == [operation["uuid"]]
    refused = run_accel("setup", device, "--enable-vfs", "99", "--api-url", api.url)
    assert refused.returncode == 1 and "sriov_totalvfs" in refused.stderr
    two = run_accel("setup", device, "--enable-vfs", "1", "--mig", "on", "--api-url", api.url)
    assert two.returncode == 2 and "exactly one action" in two.stderr


FPGA = "0000:86:00.0"
# Stands in for fpgaconf or xbmgmt: records what it was asked to load, where.
PROGRAM_TOOL = """#!/bin/sh
echo "loading $2 onto $1"
if [ "$(basename "$2")" = broken.gbs ]; then echo "bitstream CRC mismatch" >&2; exit 3; fi
printf '%s %s\\n' "$1" "$2" > MARKER
"""


def fpga_driver_settings(tmp_path: Path, tool_script: str, *bitstreams: str) -> dict[str, Setting]:
    """An FPGA driver's settings: ``tool_script`` as its tool, a folder with ``bitstreams``."""
    folder = tmp_path / "bitstreams"
    folder.mkdir()
    for name in bitstreams:
        (folder / name).write_bytes(b"\x00" + name.encode())
    tool = tmp_path / "program-fpga"
    tool.write_text(tool_script)
    tool.chmod(0o755)
    return {
        **FAST_DRIVER,
        "fpga_program_tool": f"{tool} {{address}} {{bitstream}}",
        "bitstream_dir": folder,
    }


def test_cyborgs_program_call_runs_the_configured_tool_on_the_fpga(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs, tmp_path: Path
) -> None:
    marker = tmp_path / "programmed"
    script = PROGRAM_TOOL.replace("MARKER", str(marker))
    settings = fpga_driver_settings(tmp_path, script, "nlb0.gbs", "broken.gbs")
    conductor = cluster.conductor(sqlite_url, **SLOW_RESYNC_CONDUCTOR)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    cluster.driver("FPGA", agent, gpu_server.root, **settings)
    [deployable] = wait_until(
        lambda: get(api, "/v2/deployables")["deployables"] or None, "the FPGA's deployable"
    )
    program = f"{api.url}/v2/deployables/{deployable['uuid']}/program"

    def patch(image: str) -> httpx.Response:
        ops = [{"op": "replace", "path": "/program", "value": [{"image_uuid": image}]}]
        return httpx.patch(program, json=ops, timeout=30)

    answer = patch("nlb0.gbs")
    assert answer.status_code == 202, answer.text
    assert answer.json()["uuid"] == deployable["uuid"]  # Cyborg's deployable, plus...
    done = finished(api, answer.json()["operation"]["uuid"])  # ...the operation to follow
    assert (done["state"], done["action"], done["address"]) == (
        OperationState.DONE,
        "program",
        FPGA,
    ), done
    assert marker.read_text().split() == [FPGA, str(tmp_path / "bitstreams" / "nlb0.gbs")]

    broken = finished(api, patch("broken.gbs").json()["operation"]["uuid"])
    assert broken["state"] == OperationState.FAILED
    assert "CRC mismatch" in broken["error"], broken["error"]
    missing = finished(api, patch("absent.gbs").json()["operation"]["uuid"])
    assert missing["state"] == OperationState.FAILED and "absent.gbs" in missing["error"]
    assert patch("../../etc/passwd").status_code == 400


# Stands in for a slow programming tool: counts its runs, then waits to be released.
WAITING_TOOL = """#!/bin/sh
echo "$1" >> RUNS
i=0
while [ ! -e RELEASE ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
"""


def test_an_operation_survives_its_driver_being_killed(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs, tmp_path: Path
) -> None:
    runs, release = tmp_path / "runs", tmp_path / "release"
    script = WAITING_TOOL.replace("RUNS", str(runs)).replace("RELEASE", str(release))
    settings = fpga_driver_settings(tmp_path, script, "nlb0.gbs")
    conductor = cluster.conductor(sqlite_url, **SLOW_RESYNC_CONDUCTOR)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    driver = cluster.driver("FPGA", agent, gpu_server.root, **settings)
    [device] = wait_until(lambda: hardware(api) or None, "the FPGA in the API")

    answer = setup(api, device["uuid"], {"action": "program", "bitstream": "nlb0.gbs"})
    assert answer.status_code == 202, answer.text
    operation = answer.json()["operation"]["uuid"]

    def runs_seen(count: int) -> bool:
        return runs.exists() and len(runs.read_text().splitlines()) == count

    wait_until(lambda: runs_seen(1), "the tool to start")
    driver.kill()  # kill -9 mid-programming: the driver forgets the operation
    cluster.driver("FPGA", agent, gpu_server.root, **settings)
    wait_until(lambda: runs_seen(2), "the conductor to send the operation again")
    release.touch()
    done = finished(api, operation)
    assert done["state"] == OperationState.DONE, done
    assert [o["uuid"] for o in get(api, "/v2/operations")["operations"]] == [operation]
