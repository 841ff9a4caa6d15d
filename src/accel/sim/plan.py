"""What a simulated fleet holds: which kinds each node has, and the fake trees behind them.

A plan follows from ``(nodes, devices_per_node, seed)`` alone, so a test or a benchmark
can compute what the simulator will report. Nodes of the same shape share one template
tree: discovery derives each device's uuid from the node's name, so one tree on disk
serves any number of nodes, each with its own hardware.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from accel.driver.discovery import Discoverer, device_uuid
from accel.driver.fake_sysfs import FakeFunction, FakeSysfs
from accel.internal.schemas import HardwareEntry, Kind

# One card per kind, as discovery recognises it: (vendor, device, class, kernel driver).
CARDS: dict[Kind, tuple[int, int, int, str]] = {
    Kind.GPU: (0x10DE, 0x2331, 0x030200, "nvidia"),  # H100 PCIe
    Kind.QAT: (0x8086, 0x4940, 0x0B4000, "4xxx"),  # QuickAssist 4xxx, no VFs
    Kind.FPGA: (0x8086, 0x09C4, 0x120000, "dfl-pci"),  # PAC Arria 10
    Kind.AICHIP: (0x1DA3, 0x1020, 0x120000, "habanalabs"),  # Gaudi2
}
# GPU servers are the common case; the others show up now and then.
PRIMARY_KINDS = (Kind.GPU, Kind.GPU, Kind.GPU, Kind.QAT, Kind.FPGA, Kind.AICHIP)
SECOND_KIND_SHARE = 0.3
MAX_DEVICES_PER_KIND = 250  # one bus number each


@dataclass(frozen=True)
class NodePlan:
    name: str
    devices: dict[Kind, int]

    @property
    def total(self) -> int:
        return sum(self.devices.values())


def plan_fleet(
    nodes: int, devices_per_node: int, seed: int = 0, prefix: str = "sim"
) -> list[NodePlan]:
    """``nodes`` nodes of ``devices_per_node`` devices each, one or two kinds per node."""
    if not 1 <= devices_per_node <= MAX_DEVICES_PER_KIND:
        raise ValueError(f"devices per node must be between 1 and {MAX_DEVICES_PER_KIND}")
    rng = random.Random(seed)
    plans = []
    for index in range(nodes):
        primary = rng.choice(PRIMARY_KINDS)
        devices = {primary: devices_per_node}
        if devices_per_node > 1 and rng.random() < SECOND_KIND_SHARE:
            second = rng.choice([kind for kind in CARDS if kind is not primary])
            moved = rng.randint(1, devices_per_node - 1)
            devices = {primary: devices_per_node - moved, second: moved}
        plans.append(NodePlan(f"{prefix}{index:05d}", devices))
    return plans


def template_root(base: Path, kind: Kind, count: int) -> Path:
    return base / f"{kind.value.lower()}-x{count}"


def build_template(base: Path, kind: Kind, count: int, rebind: bool = False) -> Path:
    """A tree holding ``count`` cards of ``kind`` (built once, then reused); with
    ``rebind`` the first card is bound to vfio-pci instead of its vendor's driver."""
    root = template_root(base, kind, count)
    if (root / "complete").exists():
        return root
    tree = FakeSysfs(root)
    vendor, device, class_code, driver = CARDS[kind]
    for index in range(count):
        tree.add(
            FakeFunction(
                f"0000:{index + 1:02x}:00.0",
                vendor,
                device,
                class_code,
                subsystem_vendor=vendor,
                numa_node=index % 2,
                driver="vfio-pci" if rebind and index == 0 else driver,
                iommu_group=index + 1,
            )
        )
    (root / "complete").write_text("")
    return root


def build_templates(base: Path, plans: list[NodePlan]) -> dict[tuple[Kind, int], Path]:
    """Every template the plan needs, keyed by (kind, count)."""
    shapes = {(kind, count) for plan in plans for kind, count in plan.devices.items()}
    return {shape: build_template(base, *shape) for shape in sorted(shapes, key=str)}


# What a template is read as, before each node's entries get that node's uuids.
TEMPLATE_NODE = "template"


@dataclass(frozen=True)
class TemplateDiscoverer(Discoverer):
    """Discovery of a template tree: read for real once, each node's entries made from
    that reading and remembered.

    A template never changes on disk (the simulator changes a node's hardware by
    pointing its driver at another tree, with a fresh memory), so a later discovery
    would read the same files to the same answer. Without this, a thousand nodes'
    resyncs would re-read a thousand trees in one process and measure the simulator.
    ``readings`` is shared by the fleet's discoverers: the nodes of one shape differ
    only in their devices' uuids (``device_uuid``), so each node's entries are the
    template's with its own uuids, sharing the rest (the facts of each function)
    rather than a copy of it per node.
    """

    memory: dict[str, list[HardwareEntry]] = field(default_factory=dict, compare=False, repr=False)
    readings: dict[Path, list[HardwareEntry]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def discover(self, node: str) -> list[HardwareEntry]:
        found = self.memory.get(node)
        if found is None:
            template = self.readings.get(self.sysfs_root)
            if template is None:
                template = self.readings[self.sysfs_root] = super().discover(TEMPLATE_NODE)
            found = self.memory[node] = [_of_node(entry, node) for entry in template]
        return found


def _of_node(entry: HardwareEntry, node: str) -> HardwareEntry:
    pci = entry.pci
    assert pci is not None, "every card of a template is a PCI function"
    uuid = device_uuid(node, pci.address, int(pci.vendor_id, 16), int(pci.product_id, 16))
    return entry.model_copy(update={"uuid": uuid})
