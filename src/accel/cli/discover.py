"""``accel discover``: discovery right here, no services: an operator's first command
on a new server. A table (address, kind, name, NUMA node, VFs, state, health) or
``--json``. Health is one read of each device's evidence, as a driver's first
discovery makes it: conditions (a narrowed link, a QAT device down, config space
gone) show, counters are only baselined."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import cast

import click

from accel.cli.operator import print_table, readiness
from accel.cli.options import device_filter, device_filter_options, option
from accel.driver.discovery import Discoverer
from accel.driver.health.gpu import HealthNvml
from accel.driver.health.monitor import HealthMonitor
from accel.driver.nvml import load_nvml
from accel.internal.health_schemas import DeviceHealth
from accel.internal.schemas import HardwareEntry, Kind
from accel.internal.versions import NEWEST
from accel.states import CheckSeverity, HealthState

COLUMNS = ("address", "kind", "name", "numa", "vfs", "state", "health")


def display_name(entry: HardwareEntry) -> str:
    """The name the table shows: the PCI ID database's, else the GPU driver's, else ids."""
    pci = entry.pci
    if pci is None:
        return ""
    if pci.product_name is None and entry.gpu is not None and entry.gpu.name:
        return entry.gpu.name  # the card is newer than this machine's PCI ID database
    vendor = pci.vendor_name or pci.vendor_id
    product = pci.product_name or pci.product_id
    return f"{vendor} {product}"


def health_text(entry: HardwareEntry) -> str:
    """The device's state and each check that read bad, with its value; then each VF
    whose own health is not ok."""
    text = _health(entry.health)
    for vf in entry.virtual_functions:
        if vf.health is not None and vf.health.state not in (HealthState.OK, HealthState.UNKNOWN):
            text += f"; vf {vf.address} {_health(vf.health)}"
    return text


def _health(health: DeviceHealth | None) -> str:
    if health is None:
        return HealthState.UNKNOWN.value
    bad = [f"{c.check} {c.value}" for c in health.checks if c.severity != CheckSeverity.OK]
    return f"{health.state.value}: {', '.join(bad)}" if bad else health.state.value


def _row(entry: HardwareEntry) -> list[object]:
    vfs = f"{entry.sriov.num_vfs}/{entry.sriov.total_vfs}" if entry.sriov else ""
    return [
        entry.pci.address if entry.pci else entry.uuid,
        entry.acc_specs.device_type.value,
        display_name(entry),
        entry.pci.numa_node if entry.pci else None,
        vfs,
        readiness(entry.model_dump()),
        health_text(entry),
    ]


@click.command()
@option("--sysfs-root", type=click.Path(path_type=Path, file_okay=False), default=Path("/"))
@click.option("--kind", "kinds", multiple=True, help="Only these kinds (repeatable).")
@click.option("--node", default=None, help="Node name for the uuids (default: hostname).")
@device_filter_options
@option("--nvml/--no-nvml", default=True, help="Ask NVIDIA's NVML about GPUs, where present.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def discover(
    sysfs_root: Path,
    kinds: tuple[str, ...],
    node: str | None,
    allow: tuple[str, ...],
    deny: tuple[str, ...],
    nvml: bool,
    as_json: bool,
) -> None:
    """Run discovery here, without any service, and print what it finds."""
    try:
        chosen = [Kind.parse(k) for k in kinds] or list(Kind)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--kind") from exc
    node = node or socket.gethostname()
    library = load_nvml() if nvml and Kind.GPU in chosen else None
    selection = device_filter(allow, deny)
    found = []
    for kind in chosen:
        entries = Discoverer(kind, sysfs_root, selection, nvml=library).discover(node)
        gpu = cast(HealthNvml | None, library) if kind is Kind.GPU else None
        found += HealthMonitor(kind, sysfs_root, nvml=gpu).attach(entries)
    if as_json:
        click.echo(json.dumps({"hardware": [e.wire(NEWEST) for e in found]}, indent=2))
        return
    print_table(
        f"{len(found)} devices under {sysfs_root} on {node}",
        COLUMNS,
        [_row(entry) for entry in found],
    )
