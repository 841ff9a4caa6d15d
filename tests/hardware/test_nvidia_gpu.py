"""accel's GPU discovery beside ``nvidia-smi`` on a machine with NVIDIA GPUs.

Skipped where there is no working ``nvidia-smi``: CI has no GPU. Run it on a GPU
server with ``pytest tests/hardware -s`` (docs/hardware-validation.md records runs).
Fields that the GPU itself changes while idle (the current PCIe link) are printed
side by side, not compared.

The health evidence accel's NVML checks read (ECC count, pages and rows pending, a
failed remap, temperature against the slowdown threshold, the recovery action) is
compared with what ``nvidia-smi -q -x`` shows of the same GPU; that part also needs
pynvml (the ``nvml`` extra) and skips without it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any, cast

import pytest

from accel.driver.health.evidence import Counters, Reading
from accel.driver.health.gpu import DEFAULT_IGNORED_XIDS, RECOVERY_ACTIONS, GpuHealth, HealthNvml
from accel.driver.nvml import load_nvml
from tests.driver.health_fakes import HealthNvmlFake
from tests.hardware.nvidia_smi import SmiGpu, parse, sysfs_address
from tests.hardware.nvidia_smi_health import SmiHealth, parse_health

COMPARED = (
    "vendor_id",
    "product_id",
    "subsystem_vendor_id",
    "subsystem_product_id",
    "max_link_speed",
    "max_link_width",
)
GPU_FACTS = ("name", "gpu_uuid", "serial", "memory_total_mib", "mig_mode", "driver_version")
SHOWN = ("current_link_speed", "current_link_width")


def nvidia_smi_document() -> str:
    if shutil.which("nvidia-smi") is None:
        pytest.skip("no nvidia-smi here")
    done = subprocess.run(
        ["nvidia-smi", "-q", "-x"], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"nvidia-smi cannot talk to a GPU here: {done.stdout or done.stderr}")
    return done.stdout


def nvidia_smi_gpus() -> list[SmiGpu]:
    return parse(nvidia_smi_document())


def accel_gpus() -> dict[str, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "accel", "discover", "--kind", "GPU", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return {e["pci"]["address"]: e for e in json.loads(done.stdout)["hardware"]}


def compute_capabilities() -> dict[str, str]:
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=pci.bus_id,compute_cap", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = {}
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        bus_id, _, capability = (part.strip() for part in line.partition(","))
        found[sysfs_address(bus_id)] = capability
    return found


def test_every_gpu_nvidia_smi_sees_is_discovered_with_the_same_facts() -> None:
    reference = nvidia_smi_gpus()
    discovered = accel_gpus()
    capabilities = compute_capabilities()
    assert sorted(discovered) == sorted(gpu.address for gpu in reference)
    for gpu in reference:
        entry = discovered[gpu.address]
        pci, facts = entry["pci"], entry.get("gpu") or {}
        rows = [("field", "nvidia-smi", "accel")]
        mismatches = []
        for name in (*COMPARED, *GPU_FACTS, *SHOWN):
            theirs = getattr(gpu, name)
            ours = facts.get(name) if name in GPU_FACTS else pci.get(name)
            rows.append((name, str(theirs), str(ours)))
            if name not in SHOWN and theirs is not None and theirs != ours:
                mismatches.append(name)
        if gpu.address in capabilities:
            ours = facts.get("compute_capability")
            rows.append(("compute_capability", capabilities[gpu.address], str(ours)))
            if capabilities[gpu.address] != ours:
                mismatches.append("compute_capability")
        print(f"\n{gpu.address}")
        for row in rows:
            print("  {:<22} {:<44} {}".format(*row))
        assert not mismatches, f"{gpu.address}: accel and nvidia-smi differ on {mismatches}"


class SeenCounters(Counters):
    """Counters that keep each raw value read, so the ECC count itself is compared
    (a reading shows only its growth since the last poll)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, int] = {}

    def delta(self, key: str, value: int) -> int:
        self.values[key] = value
        return super().delta(key, value)


def health_mismatches(
    smi: SmiHealth, readings: dict[str, Reading], ecc: int | None
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Rows to print (field, nvidia-smi, accel) and the fields where the two differ."""
    rows: list[tuple[str, str, str]] = []
    differ: list[str] = []

    def compare(name: str, theirs: object, ours: object, same: bool) -> None:
        rows.append((name, str(theirs), str(ours)))
        if theirs is not None and not same:
            differ.append(name)

    compare("ecc_uncorrected", smi.ecc_uncorrected, ecc, smi.ecc_uncorrected == ecc)
    pending = readings["gpu_memory_pending"]
    smi_pending = None
    if smi.pages_pending is not None or smi.rows_pending is not None:
        smi_pending = bool(smi.pages_pending or smi.rows_pending)
    compare("memory_pending", smi_pending, pending.value, pending.bad == smi_pending)
    remap = readings["gpu_row_remap_failure"]
    compare(
        "row_remap_failure", smi.row_remap_failure, remap.value, remap.bad == smi.row_remap_failure
    )
    temperature = readings["gpu_temperature"]
    ours = temperature.value.replace("(slowdown at ", "").rstrip(")").split(" C")
    hot, slowdown = (int(ours[0]), int(ours[1])) if temperature.bad is not None else (None, None)
    compare("slowdown_threshold", smi.slowdown, slowdown, smi.slowdown == slowdown)
    # The temperature moves between the two reads: a few degrees apart is the same.
    close = hot is not None and smi.temperature is not None and abs(hot - smi.temperature) <= 5
    compare("temperature", smi.temperature, hot, close)
    action = readings["gpu_recovery_action"]
    known = {name for name in RECOVERY_ACTIONS.values()}
    theirs = smi.recovery_action if smi.recovery_action in known else None
    compare("recovery_action", smi.recovery_action, action.value, action.value == theirs)
    return rows, differ


def test_every_gpus_health_evidence_matches_nvidia_smi() -> None:
    reference = parse_health(nvidia_smi_document())
    library = load_nvml()
    if library is None:
        pytest.skip("pynvml is not installed or NVML is not usable here")
    health = GpuHealth(cast(HealthNvml, library), DEFAULT_IGNORED_XIDS)
    discovered = accel_gpus()
    failures = {}
    for address, smi in sorted(reference.items()):
        counters = SeenCounters()
        readings = {r.check: r for r in health.readings(address, counters)}
        assert readings["gpu_lost"].bad is False, f"{address}: NVML does not answer"
        rows, differ = health_mismatches(smi, readings, counters.values.get(f"nvml/{address}/ecc"))
        state = discovered[address]["health"]["state"]
        rows.append(("accel health", "", state))
        print(f"\n{address} health")
        for row in rows:
            print("  {:<22} {:<44} {}".format(*row))
        if differ:
            failures[address] = differ
    assert not failures, f"accel and nvidia-smi differ on {failures}"


def test_the_health_comparison_on_a_fake_nvml_finds_agreement_and_each_difference() -> None:
    """The comparison itself, without a GPU: NVML's fake against nvidia-smi's words."""
    nvml = HealthNvmlFake("0000:18:00.0", ecc_uncorrected=3, rows=(0, 0, 1, 0))
    counters = SeenCounters()
    readings = {
        r.check: r for r in GpuHealth(nvml, DEFAULT_IGNORED_XIDS).readings(nvml.address, counters)
    }
    smi = SmiHealth("0000:18:00.0", True, 3, None, True, False, 47, 87, "none")
    ecc = counters.values["nvml/0000:18:00.0/ecc"]
    assert health_mismatches(smi, readings, ecc)[1] == []
    other = SmiHealth("0000:18:00.0", True, 4, None, False, True, 70, 90, "gpu reset")
    assert health_mismatches(other, readings, ecc)[1] == [
        "ecc_uncorrected",
        "memory_pending",
        "row_remap_failure",
        "slowdown_threshold",
        "temperature",
        "recovery_action",
    ]
