"""The driver's health poll: CPU per poll of one node, 8 GPUs (each behind its own
switch port, whose AER counters are read too) and a QAT with 16 VFs, on a fake tree
of plain files, in process; and what lending the health to each discovery adds.
NVML's calls are not included: they cost what the NVIDIA driver makes them cost,
which a fake library cannot stand for.

``python -m bench.health [--polls N] [--interval S]`` prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from accel.driver.discovery import Discoverer
from accel.driver.fake_health import healthy, set_qat_heartbeat, set_qat_ras
from accel.driver.fake_sysfs import FakeFunction, FakeSysfs
from accel.driver.health.monitor import HEALTH_INTERVAL, HealthMonitor
from accel.driver.pci_ids import PciIdDatabase
from accel.internal.schemas import Kind

QAT = "0000:6b:00.0"


def build_node(root: Path) -> FakeSysfs:
    """8 H100s, each under a switch downstream port, and a QAT 4xxx with 16 VFs."""
    tree = FakeSysfs(root)
    for index in range(8):
        bus = 0x17 + index * 0x10
        port = f"0000:{bus - 1:02x}:00.0"
        gpu = f"0000:{bus:02x}:00.0"
        tree.add(FakeFunction(port, 0x1000, 0xC030, 0x060400, driver="pcieport"))
        tree.add(FakeFunction(gpu, 0x10DE, 0x2331, 0x030200, driver="nvidia", upstream=port))
        healthy(tree, port, 0x1000, link=False)
        healthy(tree, gpu, 0x10DE)
    qat = FakeFunction(QAT, 0x8086, 0x4940, 0x0B4000, driver="4xxx", sriov_total_vfs=16)
    tree.add(qat)
    vfs = [f"0000:6b:{slot // 8:02x}.{slot % 8}" for slot in range(1, 17)]
    tree.add_virtual_functions(qat, 0x4941, vfs, driver="vfio-pci")
    healthy(tree, QAT, 0x8086)
    set_qat_heartbeat(tree, QAT, 0)
    for which in ("fatal", "nonfatal", "correctable"):
        set_qat_ras(tree, QAT, which, 0)
    for vf in vfs:
        healthy(tree, vf, 0x8086, link=False)
    return tree


@dataclass(frozen=True)
class PollCost:
    kind: Kind
    functions: int
    median_ms: float
    p90_ms: float
    attach_ms: float


def measure(root: Path, kind: Kind, polls: int) -> PollCost:
    entries = Discoverer(kind, root, names=PciIdDatabase.empty()).discover("bench")
    monitor = HealthMonitor(kind, root)
    monitor.attach(entries)  # the first poll sets every counter's baseline
    costs = []
    for _ in range(polls):
        start = time.process_time()
        monitor.poll(entries)
        costs.append((time.process_time() - start) * 1000)
    costs.sort()
    attach = []
    for _ in range(polls):
        start = time.process_time()
        monitor.attach(entries)
        attach.append((time.process_time() - start) * 1000)
    functions = sum(1 + len(entry.virtual_functions) for entry in entries)
    return PollCost(
        kind,
        functions,
        statistics.median(costs),
        costs[int(len(costs) * 0.9)],
        statistics.median(attach),
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.health")
    parser.add_argument("--polls", type=int, default=500)
    parser.add_argument("--interval", type=float, default=HEALTH_INTERVAL)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        root = Path(work) / "node"
        build_node(root)
        results = [measure(root, kind, args.polls) for kind in (Kind.GPU, Kind.QAT)]
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"health poll, {args.polls} polls, {os.cpu_count()} CPUs, load {load}\n")
    print(
        "| driver | functions polled | CPU per poll, median | p90 | share of a core at "
        f"{args.interval:g} s | health lent to a discovery, median |"
    )
    print("|---|---|---|---|---|---|")
    for result in results:
        share = result.median_ms / 1000 / args.interval * 100
        print(
            f"| {result.kind.value} | {result.functions} | {result.median_ms:.2f} ms | "
            f"{result.p90_ms:.2f} ms | {share:.3f} % | {result.attach_ms:.2f} ms |"
        )
    total = sum(result.median_ms for result in results)
    print(
        f"| node (both) | {sum(r.functions for r in results)} | {total:.2f} ms | - | "
        f"{total / 1000 / args.interval * 100:.3f} % | - |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
