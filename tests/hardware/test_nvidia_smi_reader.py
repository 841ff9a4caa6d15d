"""The nvidia-smi reader, on a document laid out as nvidia-smi 580 writes it."""

from __future__ import annotations

from tests.hardware.nvidia_smi import parse
from tests.hardware.nvidia_smi_health import SmiHealth, parse_health

DOCUMENT = """<?xml version="1.0" ?>
<nvidia_smi_log>
  <driver_version>580.159.03</driver_version>
  <gpu id="00000000:18:00.0">
    <product_name>NVIDIA H100 80GB HBM3</product_name>
    <mig_mode><current_mig>Disabled</current_mig><pending_mig>Disabled</pending_mig></mig_mode>
    <serial>1654123456789</serial>
    <uuid>GPU-5a1c2f3e-0000-1111-2222-333344445555</uuid>
    <pci>
      <pci_bus_id>00000000:18:00.0</pci_bus_id>
      <pci_device_id>233010DE</pci_device_id>
      <pci_sub_system_id>16C110DE</pci_sub_system_id>
      <pci_gpu_link_info>
        <pcie_gen><max_link_gen>5</max_link_gen><current_link_gen>1</current_link_gen></pcie_gen>
        <link_widths><max_link_width>16x</max_link_width><current_link_width>16x</current_link_width></link_widths>
      </pci_gpu_link_info>
    </pci>
    <fb_memory_usage><total>81559 MiB</total><used>0 MiB</used></fb_memory_usage>
  </gpu>
  <gpu id="00000001:9A:00.0">
    <mig_mode><current_mig>N/A</current_mig></mig_mode>
    <serial>N/A</serial>
    <uuid>GPU-00000000-aaaa-bbbb-cccc-dddddddddddd</uuid>
    <pci><pci_device_id>0x20B510DE</pci_device_id></pci>
    <fb_memory_usage><total>[Unknown Error]</total></fb_memory_usage>
  </gpu>
</nvidia_smi_log>
"""


def test_each_gpu_is_read_in_sysfs_terms() -> None:
    first = parse(DOCUMENT)[0]
    assert (first.address, first.name) == ("0000:18:00.0", "NVIDIA H100 80GB HBM3")
    assert (first.vendor_id, first.product_id) == ("10de", "2330")
    assert (first.subsystem_vendor_id, first.subsystem_product_id) == ("10de", "16c1")
    assert (first.gpu_uuid, first.serial) == (
        "GPU-5a1c2f3e-0000-1111-2222-333344445555",
        "1654123456789",
    )
    assert (first.memory_total_mib, first.mig_mode, first.driver_version) == (
        81559,
        "disabled",
        "580.159.03",
    )
    assert (first.max_link_speed, first.max_link_width) == ("32.0 GT/s PCIe", "16")
    assert (first.current_link_speed, first.current_link_width) == ("2.5 GT/s PCIe", "16")


def test_missing_and_unknown_fields_are_none_and_the_address_comes_from_the_id() -> None:
    second = parse(DOCUMENT)[1]
    assert second.address == "0001:9a:00.0"
    assert (second.vendor_id, second.product_id) == ("10de", "20b5")
    assert second.serial is None and second.mig_mode is None and second.name is None
    assert second.memory_total_mib is None
    assert second.subsystem_vendor_id is None and second.max_link_speed is None


HEALTH_DOCUMENT = """<?xml version="1.0" ?>
<nvidia_smi_log>
  <gpu id="00000000:18:00.0">
    <ecc_mode><current_ecc>Enabled</current_ecc></ecc_mode>
    <ecc_errors><volatile>
      <sram_correctable>0</sram_correctable>
      <sram_uncorrectable_parity>1</sram_uncorrectable_parity>
      <sram_uncorrectable_secded>0</sram_uncorrectable_secded>
      <dram_correctable>4</dram_correctable>
      <dram_uncorrectable>2</dram_uncorrectable>
    </volatile></ecc_errors>
    <retired_pages><pending_blacklist>N/A</pending_blacklist></retired_pages>
    <remapped_rows>
      <remapped_row_pending>Yes</remapped_row_pending>
      <remapped_row_failure>No</remapped_row_failure>
    </remapped_rows>
    <temperature>
      <gpu_temp>34 C</gpu_temp>
      <gpu_temp_slow_threshold>87 C</gpu_temp_slow_threshold>
    </temperature>
    <gpu_recovery_action>None</gpu_recovery_action>
  </gpu>
  <gpu id="00000000:3B:00.0">
    <ecc_mode><current_ecc>Disabled</current_ecc></ecc_mode>
    <ecc_errors><volatile><double_bit><total>3</total></double_bit></volatile></ecc_errors>
    <retired_pages><pending_retirement>Yes</pending_retirement></retired_pages>
    <temperature><gpu_temp>N/A</gpu_temp></temperature>
  </gpu>
</nvidia_smi_log>
"""


def test_health_evidence_is_read_in_the_terms_of_accels_checks() -> None:
    hopper, older = parse_health(HEALTH_DOCUMENT).values()
    assert hopper == SmiHealth(
        address="0000:18:00.0",
        ecc_enabled=True,
        ecc_uncorrected=3,  # DRAM 2 and SRAM 1 (parity)
        pages_pending=None,
        rows_pending=True,
        row_remap_failure=False,
        temperature=34,
        slowdown=87,
        recovery_action="none",
    )
    assert (older.ecc_enabled, older.ecc_uncorrected, older.pages_pending) == (False, 3, True)
    assert older.rows_pending is None and older.temperature is None and older.slowdown is None
    assert older.recovery_action is None
