"""Every kind on fake trees modelled on real servers (tests/trees/*.toml)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from accel.driver.discovery import Discoverer, count_accelerators, discover
from accel.driver.fake_sysfs import FakeSysfs, build_from_description
from accel.driver.filters import DeviceFilter
from accel.driver.pci_ids import PciIdDatabase
from accel.internal.schemas import HardwareEntry, Kind

TREES = Path(__file__).parents[1] / "trees"


def tree(name: str, tmp_path: Path) -> FakeSysfs:
    return build_from_description(TREES / f"{name}.toml", tmp_path / name)


def found(kind: Kind, root: Path, **options: Any) -> list[HardwareEntry]:
    return Discoverer(kind, root, names=PciIdDatabase.empty(), **options).discover("node1")


def by_address(entries: list[HardwareEntry]) -> dict[str, HardwareEntry]:
    return {entry.pci.address: entry for entry in entries if entry.pci}


def test_hgx_node_has_eight_gpus_and_no_nvswitch(tmp_path: Path) -> None:
    root = tree("hgx-h100", tmp_path).root
    gpus = by_address(found(Kind.GPU, root))
    assert len(gpus) == 8
    assert not [a for a in gpus if a.startswith(("0000:05", "0000:06", "0000:07", "0000:08"))]
    healthy, degraded = gpus["0000:18:00.0"].pci, gpus["0000:9a:00.0"].pci
    assert healthy is not None and degraded is not None
    assert (healthy.numa_node, healthy.local_cpulist) == (0, "0-55,112-167")
    assert (degraded.current_link_width, degraded.max_link_width) == ("8", "16")
    assert degraded.current_link_speed == "16.0 GT/s PCIe"
    assert (healthy.subsystem_vendor_id, healthy.subsystem_product_id) == ("10de", "16c1")
    # The ConnectX-7s can make VFs but have none: NICs that need setting up.
    nics = found(Kind.NIC, root)
    assert [n.acc_status.setup_required for n in nics] == [True, True]
    assert nics[0].network is not None and nics[0].network.interfaces == ["ibp23s0"]


def test_qat_node_accounts_for_every_vf_and_its_services(tmp_path: Path) -> None:
    engines = by_address(found(Kind.QAT, tree("qat-node", tmp_path).root))
    assert [len(e.virtual_functions) for e in engines.values()] == [16, 8, 0]
    full, half, idle = engines.values()
    assert full.acc_specs.num == 16 and full.sriov is not None and full.sriov.num_vfs == 16
    assert full.qat is not None and full.qat.services == ["sym", "asym"]
    assert full.acc_specs.acc_capability["services"] == ["sym", "asym"]
    assert half.virtual_functions[0].driver == "4xxxvf"
    assert half.virtual_functions[-1].address == "0000:70:01.0"
    assert idle.acc_status.setup_required is True
    assert idle.qat is not None and idle.qat.state == "down"


def test_fpga_node_reads_regions_functions_and_merges_an_alveos_functions(tmp_path: Path) -> None:
    cards = by_address(found(Kind.FPGA, tree("fpga-node", tmp_path).root))
    assert list(cards) == ["0000:3b:00.0", "0000:5e:00.0", "0000:af:00.0"]
    pac, agilex, alveo = cards.values()
    assert pac.fpga is not None
    assert pac.fpga.afu_ids == ["d8424dc4a4a3c413f89e433683f9040b"]
    assert pac.fpga.interface_id == "a52bc5ff7c9e5b4d9b2e0d1c3a4b5c6d"
    assert pac.acc_status.setup_required is False
    # An empty region (an AFU id of zeros) is hardware waiting for a bitstream.
    assert agilex.fpga is not None and agilex.fpga.afu_ids == []
    assert agilex.acc_status.setup_required is True
    assert [f.address for f in alveo.sibling_functions] == ["0000:af:00.1"]
    assert alveo.sibling_functions[0].driver == "xocl"


def test_mixed_node_sorts_gpus_from_ai_chips_and_reads_vgpu_types(tmp_path: Path) -> None:
    root = tree("mixed-ai", tmp_path).root
    gpus = by_address(found(Kind.GPU, root))
    assert list(gpus) == ["0000:4d:00.0", "0000:83:00.0", "0000:b3:00.0"]
    types = {t.type_id: t for t in gpus["0000:b3:00.0"].mdev_types}
    assert types["nvidia-471"].name == "GRID A100D-4C"
    assert types["nvidia-471"].available_instances == 10
    assert types["nvidia-471"].device_api == "vfio-pci"
    assert types["nvidia-472"].description is None  # absent, not an error
    chips = by_address(found(Kind.AICHIP, root))
    assert list(chips) == ["0000:19:00.0", "0000:1a:00.0", "0000:c4:00.0"]


def test_a_server_without_accelerators_reports_nothing(tmp_path: Path) -> None:
    assert sum(count_accelerators(tree("no-accelerators", tmp_path).root).values()) == 0


def test_an_old_kernel_without_uevent_is_read_from_the_id_files(tmp_path: Path) -> None:
    sysfs = tree("qat-node", tmp_path)
    for directory in (sysfs.sys / "devices").glob("*/*"):
        (directory / "uevent").unlink()
    engines = found(Kind.QAT, sysfs.root)
    assert len(engines) == 3 and engines[0].pci is not None
    assert engines[0].pci.driver == "4xxx"  # from the driver link instead


@pytest.mark.parametrize(
    ("allow", "deny", "expected"),
    [
        ((), (), 8),
        (("10de:2330",), (), 8),
        (("10de:*",), ("address=0000:9a:*",), 7),
        (("class=0302",), ("address=0000:[9abd]*",), 4),
        (("1002:*",), (), 0),
    ],
)
def test_allow_and_deny_lists(
    tmp_path: Path, allow: tuple[str, ...], deny: tuple[str, ...], expected: int
) -> None:
    root = tree("hgx-h100", tmp_path).root
    device_filter = DeviceFilter.parse(allow, deny)
    assert len(discover(Kind.GPU, root, "n", device_filter)) == expected


@pytest.mark.parametrize("spec", ["nvidia", "class=3", "10de:2330:1", "bus=0000:18:00.0"])
def test_a_bad_filter_spec_is_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        DeviceFilter.parse((spec,))


def test_names_come_from_the_pci_id_database(tmp_path: Path) -> None:
    ids = tmp_path / "pci.ids"
    ids.write_text(
        "10de  NVIDIA Corporation\n\t2330  GH100 [H100 SXM5 80GB]\n"
        "\t\t10de 16c1  H100 SXM5 80GB\n"
        "C 03  Display controller\n\t02  3D controller\n"
    )
    root = tree("hgx-h100", tmp_path).root
    [gpu, *_] = Discoverer(Kind.GPU, root, names=PciIdDatabase.load(ids)).discover("n")
    assert gpu.pci is not None
    assert (gpu.pci.vendor_name, gpu.pci.product_name) == (
        "NVIDIA Corporation",
        "GH100 [H100 SXM5 80GB]",
    )
    assert (gpu.pci.subsystem_name, gpu.pci.class_name) == ("H100 SXM5 80GB", "3D controller")
    [unnamed, *_] = found(Kind.GPU, root)
    assert unnamed.pci is not None and unnamed.pci.vendor_name is None
    assert unnamed.pci.vendor_id == "10de"


class FakeNvml:
    """NVML as pynvml presents it, for one H100 with MIG on and two instances."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        self.gpu, self.migs = object(), [object(), None, object()]

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlDeviceGetHandleByPciBusId(self, bus_id: str) -> object:
        if bus_id != "0000:18:00.0":
            raise self.NVMLError("not found")
        return self.gpu

    def nvmlDeviceGetUUID(self, handle: object) -> bytes:
        return b"GPU-5a1f" if handle is self.gpu else f"MIG-{self.migs.index(handle)}".encode()

    def nvmlDeviceGetName(self, handle: object) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetSerial(self, handle: object) -> str:
        raise self.NVMLError("not supported")

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> SimpleNamespace:
        return SimpleNamespace(total=(81559 if handle is self.gpu else 9728) << 20)

    def nvmlDeviceGetCudaComputeCapability(self, handle: object) -> tuple[int, int]:
        return (9, 0)

    def nvmlDeviceGetMigMode(self, handle: object) -> tuple[int, int]:
        return (1, 1)

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: object) -> int:
        return len(self.migs)

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: object, index: int) -> object:
        mig = self.migs[index]
        if mig is None:
            raise self.NVMLError("no instance")
        return mig


def test_nvml_enriches_nvidia_gpus_and_tolerates_what_it_cannot_say(tmp_path: Path) -> None:
    root = tree("hgx-h100", tmp_path).root
    gpus = by_address(found(Kind.GPU, root, nvml=FakeNvml()))
    facts = gpus["0000:18:00.0"].gpu
    assert facts is not None
    assert (facts.gpu_uuid, facts.serial, facts.memory_total_mib) == ("GPU-5a1f", None, 81559)
    assert (facts.compute_capability, facts.driver_version) == ("9.0", "550.54.15")
    assert facts.name == "NVIDIA H100 80GB HBM3"
    assert facts.mig_mode == "enabled"
    assert [(m.uuid, m.memory_total_mib) for m in facts.mig_instances] == [
        ("MIG-0", 9728),
        ("MIG-2", 9728),
    ]
    # A GPU NVML does not know is described from sysfs alone.
    assert gpus["0000:2a:00.0"].gpu is None
    assert found(Kind.GPU, root)[0].gpu is None


def test_h200_vm_described_from_a_real_guest_has_one_gpu_and_no_virtio_device(
    tmp_path: Path,
) -> None:
    root = tree("h200-vm", tmp_path).root
    [gpu] = found(Kind.GPU, root)
    assert gpu.pci is not None
    assert (gpu.pci.address, gpu.pci.product_id, gpu.pci.subsystem_product_id) == (
        "0000:00:06.0",
        "2335",
        "18bf",
    )
    # A guest without NUMA or an IOMMU: both absent, not zero.
    assert (gpu.pci.numa_node, gpu.pci.iommu_group) == (None, None)
    assert (gpu.pci.max_link_speed, gpu.pci.max_link_width) == ("32.0 GT/s PCIe", "16")
    assert not gpu.acc_status.setup_required
    # virtio's net function is class 0x0200 but not a SmartNIC; its others are 0xff.
    assert sum(len(found(kind, root)) for kind in Kind) == 1
