"""What each kind's own sysfs files add (QAT services, FPGA regions and functions, NIC
interfaces), read from fake trees of plain files: a fact not shown is absent."""

from __future__ import annotations

from pathlib import Path

from accel.driver.fake_sysfs import FakeFunction, FakeSysfs
from accel.driver.kind_facts import fpga_facts, network_facts, qat_facts
from accel.driver.pci import PciFunction, read_function, scan_identities

ADDRESS = "0000:3b:00.0"
AFU = "d8424dc4-a4a3-c413-f89e-433683f9040b"
ZERO_AFU = "00000000-0000-0000-0000-000000000000"
INTERFACE = "bfac4d85-1f29-53e8-b5ee-f4e1e8b46d9d"


def function(tmp_path: Path, files: dict[str, str], class_code: int = 0x120000) -> PciFunction:
    tree = FakeSysfs(tmp_path)
    tree.add(FakeFunction(ADDRESS, 0x8086, 0x0B30, class_code, files=files))
    [identity] = scan_identities(tree.root)
    found = read_function(tree.root, identity)
    assert found is not None
    return found


def test_qat_services_are_read_whatever_separates_them(tmp_path: Path) -> None:
    facts = qat_facts(function(tmp_path, {"qat/cfg_services": "sym; dc,asym", "qat/state": "up"}))
    assert facts is not None
    assert (facts.services, facts.state) == (["sym", "dc", "asym"], "up")


def test_a_qat_card_that_shows_only_its_state_has_no_services(tmp_path: Path) -> None:
    facts = qat_facts(function(tmp_path, {"qat/state": "down"}))
    assert facts is not None and (facts.services, facts.state) == ([], "down")


def test_a_function_without_qat_files_has_no_qat_facts(tmp_path: Path) -> None:
    assert qat_facts(function(tmp_path, {})) is None


def test_a_dfl_fpga_shows_its_regions_interface_and_loaded_functions(tmp_path: Path) -> None:
    files = {
        "fpga_region/region0/compat_id": INTERFACE,
        "fpga_region/region0/dfl-port.0/afu_id": AFU,
        "fpga_region/region1/dfl-port.1/afu_id": ZERO_AFU,  # a port with nothing loaded
    }
    facts = fpga_facts(function(tmp_path, files))
    assert facts is not None
    assert (facts.regions, facts.interface_id, facts.afu_ids) == (
        ["region0", "region1"],
        INTERFACE,
        [AFU],
    )


def test_an_opae_fpga_is_read_from_its_older_paths(tmp_path: Path) -> None:
    files = {
        "fpga/intel-fpga-dev.0/intel-fpga-port.0/afu_id": AFU.replace("-", ""),
        "fpga/intel-fpga-dev.0/intel-fpga-fme.0/pr/interface_id": INTERFACE,
    }
    facts = fpga_facts(function(tmp_path, files))
    assert facts is not None
    assert (facts.regions, facts.interface_id, facts.afu_ids) == (
        [],
        INTERFACE,
        [AFU.replace("-", "")],
    )


def test_a_function_without_fpga_files_has_no_fpga_facts(tmp_path: Path) -> None:
    assert fpga_facts(function(tmp_path, {"something/else": "1"})) is None


def test_a_nics_interfaces_and_its_switch_are_read(tmp_path: Path) -> None:
    files = {
        "net/ens1f0/phys_switch_id": "",
        "net/ens1f0np0/phys_switch_id": "a1b2c3",
    }
    facts = network_facts(function(tmp_path, files, class_code=0x020000))
    assert facts is not None
    assert (facts.interfaces, facts.phys_switch_id) == (["ens1f0", "ens1f0np0"], "a1b2c3")


def test_a_function_without_interfaces_has_no_network_facts(tmp_path: Path) -> None:
    assert network_facts(function(tmp_path, {}, class_code=0x020000)) is None
