"""How one reported hardware entry becomes a device row and its deployables, as Cyborg's
drivers make them: one deployable per device, per VF, or per mediated-device type."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from accel.conductor.hardware_rows import (
    DeployablePlan,
    device_columns,
    fingerprint,
    function_named_twice,
    plan_deployables,
    sync_deployables,
)
from accel.db.models import Device
from accel.internal.schemas import HardwareEntry, HardwareList

T0 = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
GPU_UUID = "ed55a1c7-dbc6-50df-8938-ab1de8185e80"


def function(address: str, vendor: str = "10de", product: str = "2330", **more: Any) -> Any:
    facts = {"address": address, "vendor_id": vendor, "product_id": product}
    return {"class_code": "030200", **facts, **more}


def entry(kind: str = "GPU", **fields: Any) -> HardwareEntry:
    return HardwareEntry.model_validate(
        {
            "uuid": GPU_UUID,
            "acc_specs": {"num": 1, "device_type": kind},
            "acc_status": {"setup_required": False},
            "pci": function("0000:17:00.0"),
        }
        | fields
    )


def test_a_device_without_vfs_is_one_deployable_attached_by_its_own_address() -> None:
    [plan] = plan_deployables(entry(), "node1")
    assert plan.name == "node1_0000:17:00.0"
    # uuid3 of the name in the DNS namespace, as Cyborg derives it.
    assert plan.rp_uuid == "edb231a3-7ea1-39bf-b2a7-35fd26945027"
    assert (plan.num_accelerators, plan.driver_name) == (1, "nvidia")
    assert plan.attributes == (
        ("rc", "PGPU"),
        ("trait0", "CUSTOM_GPU_NVIDIA"),
        ("trait1", "CUSTOM_GPU_PRODUCT_ID_2330"),
    )
    [(attach_type, info)] = plan.attach_handles
    assert attach_type == "PCI"
    assert json.loads(info) == {"domain": "0000", "bus": "17", "device": "00", "function": "0"}


def test_a_function_with_vfs_offers_one_deployable_per_vf() -> None:
    vfs = [function(f"0000:98:00.{n}", "15b3", "101e", class_code="020000") for n in (2, 3)]
    nic = entry(
        "NIC",
        pci=function("0000:98:00.0", "15b3", "101d", class_code="020000"),
        virtual_functions=vfs,
    )
    plans = plan_deployables(nic, "node1")
    assert [p.name for p in plans] == ["node1_0000:98:00.2", "node1_0000:98:00.3"]
    assert all(p.num_accelerators == 1 and p.driver_name == "mellanox" for p in plans)
    assert plans[0].attributes == (
        ("rc", "CUSTOM_NIC"),
        ("trait0", "CUSTOM_VF"),
        ("trait1", "CUSTOM_NIC_MELLANOX"),
    )
    assert json.loads(plans[1].attach_handles[0][1])["function"] == "3"


def test_a_gpu_with_mdev_types_offers_one_vgpu_deployable_per_type_that_has_room() -> None:
    gpu = entry(
        mdev_types=[
            {"type_id": "nvidia-256", "name": "GRID A100-4C", "available_instances": 2},
            {"type_id": "nvidia-257", "name": "GRID A100-8C", "available_instances": 0},
        ]
    )
    [plan] = plan_deployables(gpu, "node1")
    assert plan.name == "node1_0000:17:00.0_nvidia-256"
    assert plan.num_accelerators == 2
    assert plan.attributes == (
        ("rc", "VGPU"),
        ("trait0", "CUSTOM_GPU_NVIDIA"),
        ("trait1", "CUSTOM_NVIDIA_2330_A100_4C"),
    )
    marks = [json.loads(info)["vgpu_mark"] for kind, info in plan.attach_handles]
    assert marks == ["nvidia-256_0", "nvidia-256_1"]
    assert {kind for kind, _ in plan.attach_handles} == {"MDEV"}


def test_an_entry_without_pci_facts_is_one_deployable_of_its_count_without_handles() -> None:
    old = HardwareEntry.model_validate(
        {
            "uuid": GPU_UUID,
            "acc_specs": {"num": 3, "device_type": "QAT"},
            "acc_status": {"setup_required": False},
        }
    )
    [plan] = plan_deployables(old, "node1")
    assert plan == DeployablePlan(f"node1_{GPU_UUID}", 3, None, (("rc", "CUSTOM_QAT"),), ())


def test_an_unknown_vendor_is_named_by_its_id() -> None:
    [plan] = plan_deployables(entry("AICHIP", pci=function("0000:e3:00.0", "abcd")), "n")
    assert plan.attributes[1] == ("trait0", "CUSTOM_AICHIP_VENDOR_ABCD")


def test_device_columns_name_the_controller_and_keep_only_known_board_facts() -> None:
    columns = device_columns(entry(pci=function("0000:17:00.0", numa_node=1)), "node1")
    assert (columns["type"], columns["vendor"], columns["model"]) == ("GPU", "10de", "2330")
    assert (columns["hostname"], columns["pci_address"]) == ("node1", "0000:17:00.0")
    assert json.loads(columns["std_board_info"]) == {
        "controller": "3D controller",
        "product_id": "2330",
    }
    assert json.loads(columns["vendor_board_info"]) == {"numa_node": 1}
    assert columns["fingerprint"] == fingerprint(entry(pci=function("0000:17:00.0", numa_node=1)))


def test_the_fingerprint_changes_exactly_when_the_report_does() -> None:
    assert fingerprint(entry()) == fingerprint(entry())
    assert fingerprint(entry()) != fingerprint(entry(acc_status={"setup_required": True}))
    assert fingerprint(entry()) != fingerprint(entry(pci=function("0000:17:00.0", driver="vfio")))


def test_syncing_deployables_keeps_survivors_and_their_handles_in_use() -> None:
    device = Device(uuid=GPU_UUID)
    vfs = [function(f"0000:6b:00.{n}", "8086", "4941") for n in (1, 2, 3)]
    qat = entry("QAT", pci=function("0000:6b:00.0", "8086", "4940"), virtual_functions=vfs)
    sync_deployables(device, plan_deployables(qat, "node1"), T0)
    assert sorted(d.name for d in device.deployables) == [
        "node1_0000:6b:00.1",
        "node1_0000:6b:00.2",
        "node1_0000:6b:00.3",
    ]
    kept = next(d for d in device.deployables if d.name == "node1_0000:6b:00.2")
    kept.attach_handles[0].in_use = True

    fewer = qat.model_copy(update={"virtual_functions": qat.virtual_functions[1:]})
    sync_deployables(device, plan_deployables(fewer, "node1"), T0 + dt.timedelta(minutes=1))
    assert sorted(d.name for d in device.deployables) == [
        "node1_0000:6b:00.2",
        "node1_0000:6b:00.3",
    ]
    survivor = next(d for d in device.deployables if d.name == "node1_0000:6b:00.2")
    assert survivor is kept and survivor.created_at == T0
    assert [h.in_use for h in survivor.attach_handles] == [True]


def report(*entries: HardwareEntry) -> HardwareList:
    return HardwareList(hardware=list(entries))


def test_a_function_two_entries_of_one_kind_name_is_found_however_it_is_written() -> None:
    first = entry(pci=function("0000:ab:00.0"))
    assert function_named_twice(report(first, entry(pci=function("0000:AB:00.0")))) == (
        "0000:AB:00.0"
    )
    assert function_named_twice(report(first, entry(pci=function("0000:31:00.0")))) is None


def test_two_kinds_at_one_address_are_two_drivers_views_not_a_clash() -> None:
    gpu = entry("GPU", pci=function("0000:01:00.0"))
    fpga = entry("FPGA", pci=function("0000:01:00.0"))
    assert function_named_twice(report(gpu, fpga)) is None


def test_a_vf_named_twice_within_one_entry_is_found() -> None:
    vf = function("0000:6b:00.1", "8086", "4941")
    qat = entry("QAT", pci=function("0000:6b:00.0", "8086", "4940"), virtual_functions=[vf, vf])
    assert function_named_twice(report(qat)) == "0000:6b:00.1"
