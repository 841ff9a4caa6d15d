"""A simulated fleet's plan: determined by its arguments alone, one or two kinds a
node, and one template tree on disk per shape, discovered as real hardware."""

from __future__ import annotations

from pathlib import Path

import pytest

from accel.driver.discovery import Discoverer
from accel.internal.schemas import HardwareEntry, Kind
from accel.sim.plan import (
    CARDS,
    MAX_DEVICES_PER_KIND,
    TemplateDiscoverer,
    build_template,
    build_templates,
    plan_fleet,
)


def test_a_plan_follows_from_its_arguments_alone() -> None:
    assert plan_fleet(50, 8, seed=3) == plan_fleet(50, 8, seed=3)
    assert plan_fleet(50, 8, seed=3) != plan_fleet(50, 8, seed=4)


def test_every_node_has_its_devices_in_one_or_two_kinds() -> None:
    plans = plan_fleet(200, 8, seed=1, prefix="rack")
    assert [p.name for p in plans[:2]] == ["rack00000", "rack00001"]
    assert all(p.total == 8 and 1 <= len(p.devices) <= 2 for p in plans)
    assert all(kind in CARDS and count >= 1 for p in plans for kind, count in p.devices.items())
    assert any(len(p.devices) == 2 for p in plans)  # 30% of 200 nodes: some have two


def test_a_node_of_one_device_has_one_kind() -> None:
    assert all(len(p.devices) == 1 for p in plan_fleet(100, 1))


@pytest.mark.parametrize("devices", [0, MAX_DEVICES_PER_KIND + 1])
def test_devices_per_node_out_of_bounds_are_refused(devices: int) -> None:
    with pytest.raises(ValueError, match="devices per node must be between 1 and"):
        plan_fleet(1, devices)


def test_one_template_per_shape_is_built_and_discovered_as_its_cards(tmp_path: Path) -> None:
    plans = plan_fleet(30, 4, seed=2)
    templates = build_templates(tmp_path, plans)
    assert set(templates) == {shape for p in plans for shape in p.devices.items()}
    root = build_template(tmp_path, Kind.GPU, 3)
    assert build_template(tmp_path, Kind.GPU, 3) == root  # built once, then reused

    discoverer = TemplateDiscoverer(Kind.GPU, root)
    found = discoverer.discover("node1")
    assert [entry.pci.address for entry in found if entry.pci] == [
        "0000:01:00.0",
        "0000:02:00.0",
        "0000:03:00.0",
    ]
    assert discoverer.discover("node1") is found  # remembered, not read again
    other = discoverer.discover("node2")
    assert {e.uuid for e in other}.isdisjoint({e.uuid for e in found})


def test_a_rebound_template_has_its_first_card_on_vfio(tmp_path: Path) -> None:
    root = build_template(tmp_path, Kind.QAT, 2, rebind=True)
    found = TemplateDiscoverer(Kind.QAT, root).discover("node1")
    assert [entry.pci.driver for entry in found if entry.pci] == ["vfio-pci", "4xxx"]


def test_nodes_of_one_template_share_its_reading_with_their_own_uuids(tmp_path: Path) -> None:
    root = build_template(tmp_path, Kind.FPGA, 2)
    readings: dict[Path, list[HardwareEntry]] = {}
    first = TemplateDiscoverer(Kind.FPGA, root, readings=readings).discover("node1")
    second = TemplateDiscoverer(Kind.FPGA, root, readings=readings).discover("node2")
    # What reading each node's own tree would give, uuids derived from its name included.
    assert first == Discoverer(Kind.FPGA, root).discover("node1")
    assert second == Discoverer(Kind.FPGA, root).discover("node2")
    assert list(readings) == [root]  # the tree read once for both
    # One copy of the facts for every node, not one per node.
    pairs = zip(first, second, strict=True)
    assert all(a.pci is b.pci and a.acc_specs is b.acc_specs for a, b in pairs)
