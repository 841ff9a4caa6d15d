"""bench.health measures the node it says: 8 GPUs behind switch ports and a QAT with 16
VFs, every function read and healthy (a poll of failing devices would measure more)."""

from __future__ import annotations

from pathlib import Path

from accel.driver.discovery import Discoverer
from accel.driver.health.monitor import HealthMonitor
from accel.driver.pci_ids import PciIdDatabase
from accel.internal.schemas import Kind
from bench.health import build_node, measure


def test_the_bench_node_is_whole_and_healthy(tmp_path: Path) -> None:
    root = tmp_path / "node"
    build_node(root)
    assert [measure(root, kind, 2).functions for kind in (Kind.GPU, Kind.QAT)] == [8, 17]
    for kind in (Kind.GPU, Kind.QAT):
        entries = Discoverer(kind, root, names=PciIdDatabase.empty()).discover("bench")
        monitor = HealthMonitor(kind, root)
        for entry in monitor.attach(entries):
            assert entry.health is not None and entry.health.state == "ok"
            assert all(vf.health and vf.health.state == "ok" for vf in entry.virtual_functions)
