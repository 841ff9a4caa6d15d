"""accel's GPU discovery beside ``nvidia-smi`` on a machine with NVIDIA GPUs.

Skipped where there is no working ``nvidia-smi``: CI has no GPU. Run it on a GPU
server with ``pytest tests/hardware -s`` (docs/hardware-validation.md records runs).
Fields that the GPU itself changes while idle (the current PCIe link) are printed
side by side, not compared.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

import pytest

from tests.hardware.nvidia_smi import SmiGpu, parse, sysfs_address

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


def nvidia_smi_gpus() -> list[SmiGpu]:
    if shutil.which("nvidia-smi") is None:
        pytest.skip("no nvidia-smi here")
    done = subprocess.run(
        ["nvidia-smi", "-q", "-x"], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"nvidia-smi cannot talk to a GPU here: {done.stdout or done.stderr}")
    return parse(done.stdout)


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
