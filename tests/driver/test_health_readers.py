"""The health evidence readers on fake trees of plain files, laid out as Linux does."""

from __future__ import annotations

from pathlib import Path

import pytest

from accel.driver.fake_health import (
    set_aer,
    set_config,
    set_fme_alarm,
    set_fme_error,
    set_link,
    set_qat_heartbeat,
    set_qat_ras,
    set_qat_state,
)
from accel.driver.fake_sysfs import FakeFunction, FakeSysfs, build_from_description
from accel.driver.health.evidence import Counters, Reading
from accel.driver.health.fpga import fpga_readings
from accel.driver.health.gpu import GpuHealth
from accel.driver.health.pcie import (
    BridgeSteps,
    aer_readings,
    config_reading,
    link_readings,
    upstream_bridge,
)
from accel.driver.health.qat import qat_readings
from accel.driver.tree_description import describe
from tests.driver.health_fakes import HealthNvmlFake

GPU = "0000:17:00.0"
QAT = "0000:6b:00.0"
FPGA = "0000:86:00.0"
BRIDGE = "0000:16:00.0"


def by_check(readings: list[Reading]) -> dict[str, Reading]:
    return {reading.check: reading for reading in readings}


def device(tree: FakeSysfs, address: str) -> str:
    return f"{tree.root}/sys/bus/pci/devices/{address}"


def test_aer_counts_per_poll_deltas_from_the_kernel_format(gpu_server: FakeSysfs) -> None:
    counters = Counters()
    set_aer(gpu_server, GPU, "nonfatal", {"Completion Timeout": 4})
    first = by_check(aer_readings(device(gpu_server, GPU), counters, None, 10))
    assert first["aer_nonfatal"].bad is False  # the first reading is the baseline
    assert first["aer_fatal"].bad is None  # no such file: no evidence

    set_aer(gpu_server, GPU, "nonfatal", {"Completion Timeout": 6, "Poisoned TLP": 1})
    second = by_check(aer_readings(device(gpu_server, GPU), counters, None, 10))["aer_nonfatal"]
    assert second.bad is True and second.new
    assert second.value == "+3 (Completion Timeout +2, Poisoned TLP +1)"

    third = by_check(aer_readings(device(gpu_server, GPU), counters, None, 10))["aer_nonfatal"]
    assert third.bad is False and third.value == "+0"


def test_aer_uses_the_kernels_total_line_not_the_rows_sum(gpu_server: FakeSysfs) -> None:
    path = gpu_server.device_dir(GPU) / "aer_dev_fatal"
    path.write_text("Undefined 0\nPoisoned TLP 0\nTOTAL_ERR_FATAL 0\n")
    counters = Counters()
    aer_readings(device(gpu_server, GPU), counters, None, 10)
    # One message carried two errors: the rows say 2, the kernel's total says 1.
    path.write_text("Undefined 1\nPoisoned TLP 1\nTOTAL_ERR_FATAL 1\n")
    fatal = by_check(aer_readings(device(gpu_server, GPU), counters, None, 10))["aer_fatal"]
    assert fatal.value.startswith("+1 ")


def test_a_counter_that_decreases_was_reset_and_counts_from_zero(gpu_server: FakeSysfs) -> None:
    counters = Counters()
    set_aer(gpu_server, GPU, "fatal", {"Poisoned TLP": 5})
    aer_readings(device(gpu_server, GPU), counters, None, 10)
    set_aer(gpu_server, GPU, "fatal", {})  # reset: no new error
    assert (
        by_check(aer_readings(device(gpu_server, GPU), counters, None, 10))["aer_fatal"].bad
        is False
    )
    set_aer(gpu_server, GPU, "fatal", {"Poisoned TLP": 5})
    aer_readings(device(gpu_server, GPU), counters, None, 10)
    set_aer(gpu_server, GPU, "fatal", {"Poisoned TLP": 2})  # reset, then two errors
    fatal = by_check(aer_readings(device(gpu_server, GPU), counters, None, 10))["aer_fatal"]
    assert fatal.bad is True and fatal.value.startswith("+2")


def test_correctable_errors_count_only_past_the_limit(gpu_server: FakeSysfs) -> None:
    counters = Counters()
    set_aer(gpu_server, GPU, "correctable", {"Bad DLLP": 0})
    aer_readings(device(gpu_server, GPU), counters, None, 10)
    set_aer(gpu_server, GPU, "correctable", {"Bad DLLP": 9})
    assert (
        by_check(aer_readings(device(gpu_server, GPU), counters, None, 10))["aer_correctable"].bad
        is False
    )
    set_aer(gpu_server, GPU, "correctable", {"Bad DLLP": 19})
    assert (
        by_check(aer_readings(device(gpu_server, GPU), counters, None, 10))["aer_correctable"].bad
        is True
    )


def bridged_tree(root: Path) -> FakeSysfs:
    tree = FakeSysfs(root)
    tree.add(FakeFunction(BRIDGE, 0x8086, 0x347A, 0x060400, driver="pcieport"))
    for address in ("0000:17:00.0", "0000:17:00.1"):
        tree.add(FakeFunction(address, 0x10DE, 0x2331, 0x030200, upstream=BRIDGE))
    return tree


def test_errors_counted_at_the_upstream_bridge_are_the_devices_below(tmp_path: Path) -> None:
    tree = bridged_tree(tmp_path)
    assert upstream_bridge(device(tree, GPU)) == str(tree.device_dir(BRIDGE))
    counters = Counters()
    for address in (BRIDGE, "0000:17:00.0", "0000:17:00.1"):
        set_aer(tree, address, "fatal", {})
    aer_readings(device(tree, GPU), counters, BridgeSteps(counters), 10)
    set_aer(tree, BRIDGE, "fatal", {"Surprise Down Error": 1})
    steps = BridgeSteps(counters)  # one poll: both devices below see the same step
    for address in ("0000:17:00.0", "0000:17:00.1"):
        fatal = by_check(aer_readings(device(tree, address), counters, steps, 10))["aer_fatal"]
        assert fatal.bad is True
        assert fatal.value == f"+1 (Surprise Down Error +1) at upstream {BRIDGE}"
    calm = by_check(aer_readings(device(tree, GPU), counters, BridgeSteps(counters), 10))
    assert calm["aer_fatal"].bad is False


def test_a_link_below_its_maximum_width_or_speed_or_down(gpu_server: FakeSysfs) -> None:
    directory = device(gpu_server, GPU)
    set_link(gpu_server, GPU, 16)
    assert [r.bad for r in link_readings(directory)] == [False, False, False]
    set_link(gpu_server, GPU, 4, speed="16.0 GT/s PCIe")
    readings = by_check(link_readings(directory))
    assert readings["link_width"].bad is True and readings["link_width"].value == "x4 of x16"
    assert readings["link_speed"].bad is True
    set_link(gpu_server, GPU, 0, speed="Unknown")
    readings = by_check(link_readings(directory))
    assert readings["link_down"].bad is True and readings["link_width"].bad is None


def test_config_space_that_reads_all_ones_does_not_answer(gpu_server: FakeSysfs) -> None:
    directory = device(gpu_server, GPU)
    assert config_reading(directory).bad is None  # no config file: no evidence
    set_config(gpu_server, GPU, 0x10DE)
    assert config_reading(directory).bad is False
    set_config(gpu_server, GPU, None)
    assert config_reading(directory).bad is True


def test_qat_state_heartbeat_and_ras_counters(gpu_server: FakeSysfs) -> None:
    counters = Counters()
    root, directory = str(gpu_server.root), device(gpu_server, QAT)
    first = by_check(qat_readings(root, QAT, directory, counters, 10))
    assert first["qat_state"].bad is False
    assert first["qat_heartbeat"].bad is None  # debugfs not mounted: no evidence
    assert first["qat_ras_fatal"].bad is None
    set_qat_heartbeat(gpu_server, QAT, 0)
    set_qat_ras(gpu_server, QAT, "fatal", 0)
    assert by_check(qat_readings(root, QAT, directory, counters, 10))["qat_heartbeat"].bad is False
    set_qat_heartbeat(gpu_server, QAT, -1)
    set_qat_ras(gpu_server, QAT, "fatal", 1)
    set_qat_state(gpu_server, QAT, "down")
    readings = by_check(qat_readings(root, QAT, directory, counters, 10))
    assert readings["qat_heartbeat"].bad is True
    assert readings["qat_heartbeat"].value == "unresponsive (-1)"
    assert readings["qat_ras_fatal"].bad is True and readings["qat_state"].bad is True


def test_dfl_fpga_error_files_and_hwmon_alarms(gpu_server: FakeSysfs) -> None:
    directory = device(gpu_server, FPGA)
    assert all(r.bad is None for r in fpga_readings(directory))
    for name in ("catfatal_errors", "nonfatal_errors", "pcie0_errors"):
        set_fme_error(gpu_server, FPGA, name, 0)
    set_fme_alarm(gpu_server, FPGA, "temp1_max_alarm", False)
    readings = by_check(fpga_readings(directory))
    assert readings["fpga_catfatal"].bad is False and readings["fpga_errors"].bad is False
    assert readings["fpga_thermal"].bad is False and readings["fpga_power"].bad is None
    set_fme_error(gpu_server, FPGA, "catfatal_errors", 0x4)
    set_fme_error(gpu_server, FPGA, "pcie0_errors", 0x10)
    set_fme_alarm(gpu_server, FPGA, "temp1_max_alarm", True)
    readings = by_check(fpga_readings(directory))
    assert readings["fpga_catfatal"].bad is True
    assert readings["fpga_errors"].value == "errors/pcie0_errors=0x10"
    assert readings["fpga_thermal"].bad is True


@pytest.fixture
def nvml() -> HealthNvmlFake:
    return HealthNvmlFake(GPU)


def test_nvml_xids_outside_the_ignore_list_fail(nvml: HealthNvmlFake) -> None:
    gpu, counters = GpuHealth(nvml, {13, 45}), Counters()
    assert by_check(gpu.readings(GPU, counters))["gpu_xid"].bad is False
    nvml.xids = [45, 13]  # application errors
    assert by_check(gpu.readings(GPU, counters))["gpu_xid"].bad is False
    nvml.xids = [45, 79]
    xid = by_check(gpu.readings(GPU, counters))["gpu_xid"]
    assert xid.bad is True and xid.value == "xid 79"


def test_silence_after_an_xid_is_no_evidence_without_the_recovery_action(
    nvml: HealthNvmlFake,
) -> None:
    gpu, counters = GpuHealth(nvml, ()), Counters()
    nvml.recovery_action = None
    nvml.rows = (0, 0, 1, 0)  # a row remap pending: the GPU needs a reset
    assert by_check(gpu.readings(GPU, counters))["gpu_xid"].bad is None
    nvml.rows = (0, 0, 0, 0)
    assert by_check(gpu.readings(GPU, counters))["gpu_xid"].bad is False
    nvml.recovery_action = 1
    readings = by_check(gpu.readings(GPU, counters))
    assert readings["gpu_xid"].bad is None
    assert readings["gpu_recovery_action"].bad is True
    assert readings["gpu_recovery_action"].value == "gpu reset"


def test_nvml_memory_temperature_and_lost(nvml: HealthNvmlFake) -> None:
    gpu, counters = GpuHealth(nvml, ()), Counters()
    readings = by_check(gpu.readings(GPU, counters))
    assert all(r.bad is False for r in readings.values()), readings
    nvml.ecc_uncorrected, nvml.pages_pending, nvml.rows = 2, 1, (0, 1, 1, 1)
    nvml.temperature = 90
    readings = by_check(gpu.readings(GPU, counters))
    assert readings["gpu_ecc"].value == "+2 uncorrected"
    assert readings["gpu_memory_pending"].value == "pages and rows pending"
    assert readings["gpu_row_remap_failure"].bad is True
    assert readings["gpu_temperature"].value == "90 C (slowdown at 87 C)"
    nvml.lost = True
    readings = by_check(gpu.readings(GPU, counters))
    assert readings["gpu_lost"].bad is True
    assert readings["gpu_ecc"].bad is None


def test_a_gpu_nvml_does_not_see_reads_nothing(nvml: HealthNvmlFake) -> None:
    """A GPU bound to vfio-pci is not NVML's: its NVML checks are silent, not failed."""
    readings = GpuHealth(nvml, ()).readings("0000:31:00.0", Counters())
    assert all(reading.bad is None for reading in readings)


def test_a_description_nests_functions_under_their_bridge(tmp_path: Path) -> None:
    description = tmp_path / "server.toml"
    description.write_text(
        "[[function]]\n"
        f'address = "{GPU}"\nid = "10de:2331"\nclass = "030200"\nupstream = "{BRIDGE}"\n\n'
        f'[[function]]\naddress = "{BRIDGE}"\nid = "8086:347a"\nclass = "060400"\n'
    )
    tree = build_from_description(description, tmp_path / "node")
    assert upstream_bridge(device(tree, GPU)) == str(tree.device_dir(BRIDGE))
    assert f'upstream = "{BRIDGE}"' in describe(tree.root)
    description.write_text(
        f'[[function]]\naddress = "{GPU}"\nid = "10de:2331"\nclass = "030200"\n'
        'upstream = "0000:15:00.0"\n'
    )
    with pytest.raises(ValueError, match=r"0000:15:00\.0 not described"):
        build_from_description(description, tmp_path / "other")


def test_qat_ras_nonfatal_and_correctable_past_the_limit(gpu_server: FakeSysfs) -> None:
    counters = Counters()
    root, directory = str(gpu_server.root), device(gpu_server, QAT)
    set_qat_ras(gpu_server, QAT, "nonfatal", 0)
    set_qat_ras(gpu_server, QAT, "correctable", 0)
    qat_readings(root, QAT, directory, counters, 10)
    set_qat_ras(gpu_server, QAT, "nonfatal", 1)
    set_qat_ras(gpu_server, QAT, "correctable", 9)
    readings = by_check(qat_readings(root, QAT, directory, counters, 10))
    assert readings["qat_ras_nonfatal"].bad is True and readings["qat_ras_nonfatal"].value == "+1"
    assert readings["qat_ras_correctable"].bad is False
    set_qat_ras(gpu_server, QAT, "correctable", 19)
    readings = by_check(qat_readings(root, QAT, directory, counters, 10))
    assert readings["qat_ras_correctable"].bad is True


def test_an_fpga_power_alarm_at_its_critical_level(gpu_server: FakeSysfs) -> None:
    set_fme_alarm(gpu_server, FPGA, "power1_max_alarm", False)
    set_fme_alarm(gpu_server, FPGA, "power1_crit_alarm", True)
    power = by_check(fpga_readings(device(gpu_server, FPGA)))["fpga_power"]
    assert power.bad is True and power.value == "hwmon0/power1_crit_alarm=0x1"
