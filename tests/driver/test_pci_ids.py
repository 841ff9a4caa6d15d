"""Names from a small database in the ``pci.ids`` format, never the system's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from accel.driver import pci_ids
from accel.driver.pci_ids import PciIdDatabase, PciNames

SAMPLE = "\n".join(
    [
        "#",
        "#\tList of PCI ID's (a sample for the tests)",
        "#",
        "# Syntax:",
        "# vendor  vendor_name",
        "#\tdevice  device_name\t\t\t\t<-- single tab",
        "#\t\tsubvendor subdevice  subsystem_name\t<-- two tabs",
        "",
        "1028  Dell",
        "\t0001  PowerEdge Expandable RAID Controller 2/Si",
        "10de  NVIDIA Corporation",
        "\t2330  GH100 [H100 SXM5 80GB]",
        "\t\t10de 16c1  H100 SXM5 80GB",
        "\t\t1028 2330  PowerEdge XE9680 H100",
        "#\tcomment between a device and its subsystems",
        "\t2331  GH100 [H100 PCIe]",
        "\t\t10de 1626  H100 PCIe",
        "\tzz99  a malformed device line",
        "\t\t10de 9999  subsystem of the malformed device",
        "12345  a vendor id that is too long",
        "\t0002  child of the malformed vendor",
        "8086  Intel Corporation",
        "\t0bd  a device id of three digits",
        "\t0bdaX  a device id of five characters",
        "\t4940  4xxx Series QAT",
        "\t\t8086  a subsystem line missing its subdevice",
        "\t\t80860000  a subsystem line without a space between its ids",
        "\t\tbad!  another malformed subsystem line",
        "",
        "# List of known device classes, subclasses and programming interfaces",
        "C 02  Network controller",
        "\t00  Ethernet controller",
        "C 03  Display controller",
        "\t00  VGA compatible controller",
        "\t\t00  VGA controller",
        "\t\t01  8514 controller",
        "\t02  3D controller",
        "C 0b  Processor",
        "X 10de  an unrelated top-level section",
        "\t2330  must not become a device",
        "\t40  must not become a subclass",
        "\t\t00  must not become a prog-if",
        "C 12  Processing accelerators",
        "\t00  Processing accelerators",
        "",
    ]
)


@pytest.fixture
def sample_path(tmp_path: Path) -> Path:
    path = tmp_path / "pci.ids"
    path.write_text(SAMPLE, encoding="utf-8")
    return path


@pytest.fixture
def database(sample_path: Path) -> PciIdDatabase:
    return PciIdDatabase.load(sample_path)


def test_vendor_device_subsystem_and_subsystem_vendor_names(database: PciIdDatabase) -> None:
    names = database.names(0x10DE, 0x2330, 0x030200, 0x1028, 0x2330)
    assert names == PciNames(
        vendor="NVIDIA Corporation",
        device="GH100 [H100 SXM5 80GB]",
        subsystem="PowerEdge XE9680 H100",
        subsystem_vendor="Dell",
        class_name="3D controller",
    )


def test_subsystems_belong_to_their_own_device(database: PciIdDatabase) -> None:
    assert database.names(0x10DE, 0x2331, 0x030200, 0x10DE, 0x1626).subsystem == "H100 PCIe"
    # 10de:1626 is listed under 2331 only, and 10de:16c1 under 2330 only.
    assert database.names(0x10DE, 0x2330, 0x030200, 0x10DE, 0x1626).subsystem is None
    assert database.names(0x10DE, 0x2331, 0x030200, 0x10DE, 0x16C1).subsystem is None
    assert database.names(0x10DE, 0x2330, 0x030200, 0x10DE, 0x16C1).subsystem == "H100 SXM5 80GB"


def test_subsystem_vendor_without_subsystem_device(database: PciIdDatabase) -> None:
    names = database.names(0x10DE, 0x2330, 0x030200, subsystem_vendor_id=0x1028)
    assert names.subsystem_vendor == "Dell"
    assert names.subsystem is None


def test_class_name_is_the_most_specific_listed(database: PciIdDatabase) -> None:
    assert database.names(0x10DE, 0x2330, 0x030001).class_name == "8514 controller"
    assert database.names(0x10DE, 0x2330, 0x030000).class_name == "VGA controller"
    # No prog-if 05 under 03:00, so the subclass; no subclass 80 under 03, so the class.
    assert database.names(0x10DE, 0x2330, 0x030005).class_name == "VGA compatible controller"
    assert database.names(0x10DE, 0x2330, 0x038000).class_name == "Display controller"
    assert database.names(0x10DE, 0x2330, 0x0B4000).class_name == "Processor"
    assert database.names(0x8086, 0x4940, 0x120000).class_name == "Processing accelerators"
    assert database.names(0x8086, 0x4940, 0x020000).class_name == "Ethernet controller"


def test_unknown_ids_give_none(database: PciIdDatabase) -> None:
    assert database.names(0xABCD, 0x1234, 0xFF0000, 0xABCD, 0x0001) == PciNames(
        vendor=None, device=None, subsystem=None, subsystem_vendor=None, class_name=None
    )
    names = database.names(0x10DE, 0x9999, 0x030200, 0x10DE, 0x16C1)
    assert names.vendor == "NVIDIA Corporation"
    assert names.device is None
    assert names.subsystem is None
    assert names.subsystem_vendor == "NVIDIA Corporation"


def test_unrelated_top_level_sections_are_ignored(database: PciIdDatabase) -> None:
    # "X 10de" is no vendor line: its children must not replace or add NVIDIA's devices.
    assert database.names(0x10DE, 0x2330, 0x030200).device == "GH100 [H100 SXM5 80GB]"
    # Nor its children a subclass or prog-if of the class before it.
    assert database.names(0x10DE, 0x2330, 0x0B4000).class_name == "Processor"


def test_malformed_lines_are_skipped(database: PciIdDatabase) -> None:
    assert database.names(0x10DE, 0x2330, 0x030200).vendor == "NVIDIA Corporation"
    assert database.names(0x8086, 0x4940, 0x120000).device == "4xxx Series QAT"
    assert database.names(0x8086, 0x0BD, 0x120000).device is None
    assert database.names(0x8086, 0x0BDA, 0x120000).device is None
    # The children of a malformed vendor or device are not given to the line before.
    assert database.names(0x10DE, 0x0002, 0x030200).device is None
    assert database.names(0x1234, 0x0002, 0x030200).device is None
    assert database.names(0x10DE, 0x2331, 0x030200, 0x10DE, 0x9999).subsystem is None
    for subdevice in (0x0000, 0x0A20, 0x8086):
        assert database.names(0x8086, 0x4940, 0x120000, 0x8086, subdevice).subsystem is None


def test_file_of_nothing_but_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "pci.ids"
    path.write_bytes(b"\xff\xfe not a vendor\n\t\t\tdeep\n\tzz\nC\nC zz  x\n10de\n")
    database = PciIdDatabase.load(path)
    assert database.source == path
    assert database.names(0x10DE, 0x2330, 0x030200).vendor is None


def test_undecodable_bytes_are_replaced(tmp_path: Path) -> None:
    path = tmp_path / "pci.ids"
    path.write_bytes(b"1234  Caf\xe9 Vendor\n\t5678  Na\xc3\xafve Device\n")
    names = PciIdDatabase.load(path).names(0x1234, 0x5678, 0)
    assert names.vendor == "Caf\ufffd Vendor"
    assert names.device == "Na\u00efve Device"


def test_windows_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "pci.ids"
    path.write_bytes(SAMPLE.replace("\n", "\r\n").encode())
    names = PciIdDatabase.load(path).names(0x10DE, 0x2330, 0x030200, 0x1028, 0x2330)
    assert names.device == "GH100 [H100 SXM5 80GB]"
    assert names.subsystem == "PowerEdge XE9680 H100"


def test_load_raises_for_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        PciIdDatabase.load(tmp_path / "missing.ids")


def test_empty_database_knows_nothing() -> None:
    database = PciIdDatabase.empty()
    assert database.source is None
    assert database.names(0x10DE, 0x2330, 0x030200, 0x10DE, 0x16C1) == PciNames(
        None, None, None, None, None
    )


def test_find_over_missing_paths_is_empty(tmp_path: Path) -> None:
    database = PciIdDatabase.find([tmp_path / "a.ids", tmp_path / "b.ids", tmp_path])
    assert database.source is None
    assert database.names(0x10DE, 0x2330, 0x030200).vendor is None
    assert PciIdDatabase.find([]).source is None


def test_find_picks_the_first_readable_path(tmp_path: Path, sample_path: Path) -> None:
    other = tmp_path / "other.ids"
    other.write_text("10de  Other NVIDIA name\n", encoding="utf-8")
    missing = tmp_path / "missing.ids"

    database = PciIdDatabase.find([missing, tmp_path, sample_path, other])
    assert database.source == sample_path
    assert database.names(0x10DE, 0x2330, 0x030200).vendor == "NVIDIA Corporation"

    database = PciIdDatabase.find([missing, other, sample_path])
    assert database.source == other
    assert database.names(0x10DE, 0x2330, 0x030200).vendor == "Other NVIDIA name"


def test_default_paths_are_the_debian_and_hwdata_locations() -> None:
    paths = pci_ids.DEFAULT_PATHS
    assert paths == (
        Path("/usr/share/misc/pci.ids"),
        Path("/usr/share/hwdata/pci.ids"),
        Path("/usr/share/pci.ids"),
    )


@pytest.fixture
def fresh_default_cache() -> Iterator[None]:
    pci_ids.default_database.cache_clear()
    yield
    pci_ids.default_database.cache_clear()


@pytest.mark.usefixtures("fresh_default_cache")
def test_default_database_finds_once(
    monkeypatch: pytest.MonkeyPatch, database: PciIdDatabase
) -> None:
    calls: list[None] = []

    def find() -> PciIdDatabase:
        calls.append(None)
        return database

    monkeypatch.setattr(PciIdDatabase, "find", find)
    assert pci_ids.default_database() is database
    assert pci_ids.default_database() is database
    assert len(calls) == 1
