"""Discovery on fake sysfs trees laid out exactly as Linux lays out /sys."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from accel.driver.discovery import count_accelerators, discover
from accel.driver.fake_sysfs import FakeFunction, FakeSysfs
from accel.internal.schemas import Kind

H100 = FakeFunction(
    "0000:17:00.0", 0x10DE, 0x2331, 0x030200, driver="nvidia", numa_node=0, iommu_group=20
)


def addresses(tree: FakeSysfs, kind: Kind) -> list[str]:
    return [entry.pci.address for entry in discover(kind, tree.root, "node1") if entry.pci]


def test_each_kind_finds_its_devices_on_the_example_server(gpu_server: FakeSysfs) -> None:
    assert addresses(gpu_server, Kind.GPU) == [
        "0000:17:00.0",
        "0000:31:00.0",
        "0000:b1:00.0",
        "0000:ca:00.0",
    ]
    assert addresses(gpu_server, Kind.QAT) == ["0000:6b:00.0", "0000:70:00.0"]
    assert addresses(gpu_server, Kind.FPGA) == ["0000:86:00.0"]
    assert addresses(gpu_server, Kind.NIC) == ["0000:98:00.0", "0000:98:00.1"]
    assert addresses(gpu_server, Kind.AICHIP) == ["0000:e3:00.0"]


def test_ordinary_devices_are_not_reported(gpu_server: FakeSysfs) -> None:
    reported = {address for kind in Kind for address in addresses(gpu_server, kind)}
    # BMC VGA, NVSwitch bridge, plain NIC without SR-IOV, NVMe, SATA, host bridge.
    for ordinary in (
        "0000:02:00.0",
        "0000:07:00.0",
        "0000:04:00.0",
        "0000:5a:00.0",
        "0000:00:17.0",
        "0000:00:00.0",
    ):
        assert ordinary not in reported


def test_entry_carries_the_seed_fields_and_pci_facts(gpu_server: FakeSysfs) -> None:
    gpu = discover(Kind.GPU, gpu_server.root, "node1")[0]
    assert gpu.acc_specs.device_type is Kind.GPU
    assert gpu.acc_specs.remote == 0 and gpu.acc_specs.num == 1
    assert gpu.acc_status.setup_required is False and gpu.acc_status.reboot_required is False
    assert gpu.pci is not None
    assert (gpu.pci.vendor_id, gpu.pci.product_id, gpu.pci.class_code) == ("10de", "2331", "030200")
    assert (gpu.pci.driver, gpu.pci.numa_node, gpu.pci.iommu_group) == ("nvidia", 0, 20)
    assert gpu.pci.revision == "a1"
    assert gpu.sriov is not None and gpu.sriov.total_vfs == 32 and gpu.sriov.num_vfs == 0


def test_virtual_functions_fold_into_their_physical_function(gpu_server: FakeSysfs) -> None:
    with_vfs, without_vfs = discover(Kind.QAT, gpu_server.root, "node1")
    assert [vf.address for vf in with_vfs.virtual_functions] == [
        "0000:6b:00.1",
        "0000:6b:00.2",
        "0000:6b:00.3",
        "0000:6b:00.4",
    ]
    assert {vf.product_id for vf in with_vfs.virtual_functions} == {"4941"}
    assert with_vfs.acc_specs.num == 4 and with_vfs.acc_status.setup_required is False
    # A PF that could serve VFs but has none enabled needs setting up first.
    assert without_vfs.virtual_functions == []
    assert without_vfs.acc_status.setup_required is True


def test_a_virtual_function_without_its_physical_function_stands_alone(tmp_path: Path) -> None:
    tree = FakeSysfs(tmp_path)
    physical = FakeFunction("0000:6b:00.0", 0x8086, 0x4940, 0x0B4000, sriov_total_vfs=16)
    tree.add(physical)
    tree.add_virtual_functions(physical, 0x4941, ["0000:6b:00.1"])
    tree.remove("0000:6b:00.0")  # as in a guest that was given only the VF

    [entry] = discover(Kind.QAT, tmp_path, "guest")
    assert entry.pci is not None and entry.pci.address == "0000:6b:00.1"
    assert entry.pci.product_id == "4941"


def test_uuids_are_stable_per_node_slot_and_model(tmp_path: Path) -> None:
    tree = FakeSysfs(tmp_path)
    tree.add(H100)
    first = discover(Kind.GPU, tmp_path, "node1")[0].uuid
    assert discover(Kind.GPU, tmp_path, "node1")[0].uuid == first
    assert discover(Kind.GPU, tmp_path, "node2")[0].uuid != first
    # Another model in the same slot is another device.
    tree.remove(H100.address)
    tree.add(replace(H100, device=0x2330))
    assert discover(Kind.GPU, tmp_path, "node1")[0].uuid != first


def test_a_function_vanishing_mid_scan_is_skipped(tmp_path: Path) -> None:
    tree = FakeSysfs(tmp_path)
    tree.add(H100)
    tree.add(replace(H100, address="0000:31:00.0"))
    # What a scan sees when the device goes between listdir and read: the link is
    # still listed, but what it pointed to is gone.
    shutil.rmtree(tree.device_dir("0000:31:00.0"))
    assert addresses(tree, Kind.GPU) == ["0000:17:00.0"]


def test_unreadable_attributes_are_absent_not_errors(tmp_path: Path) -> None:
    tree = FakeSysfs(tmp_path)
    tree.add(replace(H100, driver=None, iommu_group=None))
    tree.set_attribute(H100.address, "numa_node", "not-a-number")
    (tree.device_dir(H100.address) / "revision").unlink()
    [gpu] = discover(Kind.GPU, tmp_path, "node1")
    assert gpu.pci is not None
    assert (gpu.pci.numa_node, gpu.pci.revision, gpu.pci.driver, gpu.pci.iommu_group) == (
        None,
        None,
        None,
        None,
    )


def test_nic_needs_sr_iov_to_count(tmp_path: Path) -> None:
    tree = FakeSysfs(tmp_path)
    tree.add(FakeFunction("0000:04:00.0", 0x14E4, 0x165F, 0x020000, driver="tg3"))
    tree.add(
        FakeFunction("0000:98:00.0", 0x8086, 0x1592, 0x020000, driver="ice", sriov_total_vfs=128)
    )
    assert addresses(tree, Kind.NIC) == ["0000:98:00.0"]


def test_an_empty_or_missing_tree_has_no_accelerators(tmp_path: Path) -> None:
    assert count_accelerators(tmp_path / "nowhere") == dict.fromkeys(Kind, 0)
    FakeSysfs(tmp_path / "empty")
    assert sum(count_accelerators(tmp_path / "empty").values()) == 0


def test_the_committed_example_tree_matches_its_builder(gpu_server: FakeSysfs) -> None:
    example = Path(__file__).parents[2] / "examples" / "gpu-server"
    for kind in Kind:
        assert discover(kind, example, "n") == discover(kind, gpu_server.root, "n")
