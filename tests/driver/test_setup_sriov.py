"""SR-IOV setup on the fake GPU server: what is written where, in which order, and refusals."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
from pathlib import Path

import pytest

from accel.driver.fake_sysfs import FakeSysfs
from accel.driver.setup.common import Plan, Progress, SetupConfig, SetupFailed
from accel.driver.setup.sriov import plan_enable_vfs
from accel.errors import InvalidInput
from accel.internal.setup_schemas import EnableVfs
from tests.driver.setup_fakes import E810_PORT_1, Kernel, snapshot

PF0, PF1 = "0000:98:00.0", "0000:98:00.1"  # E810 ports: 8 VFs (iavf), and none
QAT = "0000:6b:00.0"  # 4 VFs, bound to vfio-pci already
DEVICES = "sys/bus/pci/devices"


def kernel_for(tree: FakeSysfs, **options: object) -> Kernel:
    return Kernel(tree, physical={PF1: E810_PORT_1}, **options)  # type: ignore[arg-type]


def plan(tree: FakeSysfs, address: str, kernel: Kernel, num_vfs: int, bind: bool = False) -> Plan:
    request = EnableVfs(action="enable_vfs", num_vfs=num_vfs, bind_vfio=bind)
    return plan_enable_vfs(tree.root, address, request, SetupConfig(write=kernel))


def run(plan: Plan) -> Progress:
    progress = Progress()
    asyncio.run(plan.run(progress))
    return progress


def read(tree: FakeSysfs, address: str, name: str) -> str:
    return (tree.root / DEVICES / address / name).read_text().strip()


def test_enabling_vfs_writes_the_count(gpu_server: FakeSysfs) -> None:
    kernel = kernel_for(gpu_server)
    progress = run(plan(gpu_server, PF1, kernel, 4))
    assert kernel.writes == [(f"{DEVICES}/{PF1}/sriov_numvfs", "4")]
    assert read(gpu_server, PF1, "sriov_numvfs") == "4"
    assert len(list((gpu_server.root / DEVICES / PF1).glob("virtfn*"))) == 4
    assert progress.steps == [f"write 4 to {gpu_server.root}/{DEVICES}/{PF1}/sriov_numvfs"]


def test_changing_a_non_zero_count_writes_zero_first(gpu_server: FakeSysfs) -> None:
    kernel = kernel_for(gpu_server)
    kernel.physical[PF0] = E810_PORT_1  # any PF will do to lay the new VFs down
    run(plan(gpu_server, PF0, kernel, 2))
    numvfs = f"{DEVICES}/{PF0}/sriov_numvfs"
    assert kernel.writes == [(numvfs, "0"), (numvfs, "2")]
    assert read(gpu_server, PF0, "sriov_numvfs") == "2"


def test_removing_every_vf_writes_zero_only(gpu_server: FakeSysfs) -> None:
    kernel = kernel_for(gpu_server)
    run(plan(gpu_server, PF0, kernel, 0))
    assert kernel.writes == [(f"{DEVICES}/{PF0}/sriov_numvfs", "0")]
    assert not list((gpu_server.root / DEVICES / PF0).glob("virtfn*"))


def test_the_count_already_set_changes_nothing(gpu_server: FakeSysfs) -> None:
    kernel = kernel_for(gpu_server)
    before = snapshot(gpu_server.root)
    checked = plan(gpu_server, PF0, kernel, 8)
    progress = run(checked)
    assert kernel.writes == [] and snapshot(gpu_server.root) == before
    assert not checked.changes
    assert progress.steps == [f"sriov_numvfs of {PF0} is already 8: nothing to change"]


def test_a_count_over_sriov_totalvfs_is_refused_before_anything_is_written(
    gpu_server: FakeSysfs,
) -> None:
    kernel = kernel_for(gpu_server)
    before = snapshot(gpu_server.root)
    with pytest.raises(InvalidInput, match=r"at most 128 virtual functions \(sriov_totalvfs\)"):
        plan(gpu_server, PF1, kernel, 129)
    assert kernel.writes == [] and snapshot(gpu_server.root) == before


def test_a_function_without_sriov_totalvfs_is_refused(gpu_server: FakeSysfs) -> None:
    with pytest.raises(InvalidInput, match=r"0000:86:00\.0 has no sriov_totalvfs"):
        plan(gpu_server, "0000:86:00.0", kernel_for(gpu_server), 1)


def test_new_vfs_are_bound_to_vfio_pci_through_driver_override(gpu_server: FakeSysfs) -> None:
    kernel = kernel_for(gpu_server)
    run(plan(gpu_server, PF1, kernel, 2, bind=True))
    vfs = ["0000:98:10.0", "0000:98:10.1"]
    expected = [(f"{DEVICES}/{PF1}/sriov_numvfs", "2")]
    for vf in vfs:
        expected += [
            (f"{DEVICES}/{vf}/driver_override", "vfio-pci"),
            (f"{DEVICES}/{vf}/driver/unbind", vf),
            ("sys/bus/pci/drivers_probe", vf),
        ]
    assert kernel.writes == expected
    for vf in vfs:
        assert read(gpu_server, vf, "driver_override") == "vfio-pci"
        assert os.path.basename(os.readlink(gpu_server.root / DEVICES / vf / "driver")) == (
            "vfio-pci"
        )


def test_vfs_already_on_vfio_pci_are_not_unbound(gpu_server: FakeSysfs) -> None:
    kernel = kernel_for(gpu_server)
    progress = run(plan(gpu_server, QAT, kernel, 4, bind=True))
    assert [value for _, value in kernel.writes] == ["vfio-pci"] * 4
    assert all(path.endswith("/driver_override") for path, _ in kernel.writes)
    assert progress.steps[0] == f"sriov_numvfs of {QAT} is already 4: nothing to change"
    assert "0000:6b:00.1 is already bound to vfio-pci" in progress.steps


def test_the_plan_names_every_step_and_checking_writes_nothing(gpu_server: FakeSysfs) -> None:
    kernel = kernel_for(gpu_server)
    before = snapshot(gpu_server.root)
    checked = plan(gpu_server, PF0, kernel, 3, bind=True)
    numvfs = f"{gpu_server.root}/{DEVICES}/{PF0}/sriov_numvfs"
    assert checked.steps[:2] == [f"write 0 to {numvfs}", f"write 3 to {numvfs}"]
    assert "for each of the 3 new virtual functions" in checked.steps[2]
    assert kernel.writes == [] and snapshot(gpu_server.root) == before


def test_a_write_the_kernel_refuses_fails_naming_the_file_and_the_errno(
    gpu_server: FakeSysfs,
) -> None:
    kernel = kernel_for(gpu_server, refuse={"sriov_numvfs": errno.EBUSY})
    with pytest.raises(SetupFailed) as failed:
        run(plan(gpu_server, PF1, kernel, 4))
    assert failed.value.message == (
        f"writing 4 to {gpu_server.root}/{DEVICES}/{PF1}/sriov_numvfs failed: "
        "Device or resource busy (EBUSY)"
    )


def test_a_real_os_error_from_a_write_fails_the_step(gpu_server: FakeSysfs) -> None:
    # The real writer, no kernel double: driver_override is a directory here.
    override = gpu_server.root / DEVICES / "0000:6b:00.2" / "driver_override"
    override.unlink()
    override.mkdir()
    request = EnableVfs(action="enable_vfs", num_vfs=4, bind_vfio=True)
    checked = plan_enable_vfs(gpu_server.root, QAT, request, SetupConfig())
    progress = Progress()
    with pytest.raises(SetupFailed, match=r"driver_override failed: Is a directory \(EISDIR\)"):
        asyncio.run(checked.run(progress))
    # The VF before it was done, and said so.
    assert progress.steps[1].endswith("0000:6b:00.1/driver_override")
    shutil.rmtree(override)


def test_a_missing_attribute_is_never_created(gpu_server: FakeSysfs) -> None:
    target = Path(gpu_server.root / DEVICES / "0000:6b:00.1" / "driver_override")
    target.unlink()
    request = EnableVfs(action="enable_vfs", num_vfs=4, bind_vfio=True)
    checked = plan_enable_vfs(gpu_server.root, QAT, request, SetupConfig())
    with pytest.raises(SetupFailed, match=r"No such file or directory \(ENOENT\)"):
        asyncio.run(checked.run(Progress()))
    assert not target.exists()
