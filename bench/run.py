"""accel's benchmarks: discovery and the public API, measured here, appended to a file.

    python -m bench.run [--append docs/benchmarks.md]

Every loop is bounded by a request count; all traffic stays on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from accel.conductor.agents import record_hello
from accel.conductor.reconcile import store_inventory
from accel.db.engine import make_engine, migrate, session_factory
from accel.driver.discovery import discover
from accel.driver.fake_sysfs import FakeFunction, FakeSysfs, build_gpu_server
from accel.internal.schemas import DriverOutcome, HardwareList, Kind
from tests.processes import Cluster

NICS = 100
VFS_PER_NIC = 8
NODES = 100


def build_wide_tree(root: Path) -> int:
    """100 SR-IOV NICs with 8 VFs each and 100 ordinary functions: 1,000 functions."""
    tree = FakeSysfs(root)
    for index in range(NICS):
        bus = f"{index + 1:02x}"
        nic = FakeFunction(
            f"0000:{bus}:00.0", 0x8086, 0x1592, 0x020000, driver="ice", sriov_total_vfs=128
        )
        tree.add(nic)
        tree.add_virtual_functions(
            nic, 0x1889, [f"0000:{bus}:01.{n}" for n in range(8)], driver="iavf"
        )
        tree.add(FakeFunction(f"0000:{bus}:02.0", 0x8086, 0xA182, 0x010601))
    return NICS * (VFS_PER_NIC + 2)


def bench_discovery(workdir: Path) -> list[str]:
    root = workdir / "wide"
    functions = build_wide_tree(root)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        found = discover(Kind.NIC, root, "bench")
        timings.append(time.perf_counter() - started)
    assert len(found) == NICS
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "accel", "discover", "--sysfs-root", str(root), "--json"],
        check=True,
        capture_output=True,
    )
    whole = time.perf_counter() - started
    return [
        f"| discovery of {functions} PCI functions ({NICS} NICs x {VFS_PER_NIC} VFs), "
        f"in-process, median of 5 | {statistics.median(timings) * 1000:.1f} ms |",
        f"| `accel discover --json` on the same tree, whole process | {whole * 1000:.0f} ms |",
    ]


def fill_database(url: str, workdir: Path) -> list[str]:
    tree = build_gpu_server(workdir / "node")
    engine = make_engine(url)
    migrate(engine)
    sessions = session_factory(engine)
    now = dt.datetime.now(dt.UTC)
    uuids: list[str] = []
    for index in range(NODES):
        name = f"node{index:04d}"
        record_hello(sessions, name, f"127.0.0.1:{7000 + index}", "1.1", now)
        report = HardwareList(
            hardware=[h for kind in Kind for h in discover(kind, tree.root, name)],
            drivers=[DriverOutcome(type=kind, endpoint="x:1", state="ok") for kind in Kind],
        )
        store_inventory(sessions, name, report, now, now, now)
        uuids.extend(str(h.uuid) for h in report.hardware)
    engine.dispose()
    return uuids


async def load(url: str, paths: list[str], connections: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = list(reversed(paths))

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            path = queue.pop()
            started = time.perf_counter()
            response = await client.get(path)
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()

    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return len(paths) / elapsed, latencies


def bench_api(workdir: Path) -> list[str]:
    database = f"sqlite:///{workdir / 'api.db'}"
    uuids = fill_database(database, workdir)
    cluster = Cluster(workdir)
    rows = []
    try:
        api = cluster.api(database, "--log-level", "warning")
        cases = [
            ("GET /v2/devices", ["/v2/devices"] * 200),
            ("GET /v2/devices/{uuid}", [f"/v2/devices/{u}" for u in uuids] * 2),
            ("GET /v2/hardware", ["/v2/hardware"] * 100),
        ]
        for name, paths in cases:
            rate, latencies = asyncio.run(load(api.url, paths, 4))
            latencies.sort()
            p50 = latencies[len(latencies) // 2] * 1000
            p99 = latencies[int(len(latencies) * 0.99)] * 1000
            rows.append(
                f"| {name}, {len(uuids)} devices, 4 connections, {len(paths)} requests "
                f"| {rate:.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms |"
            )
    finally:
        cluster.stop_all()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--append", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="accel-bench-") as folder:
        workdir = Path(folder)
        rows = bench_discovery(workdir) + bench_api(workdir)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}"
    )
    section = "\n".join(
        [
            f"## {dt.date.today().isoformat()}: `make bench` (python -m bench.run)",
            "",
            f"Machine: {machine}. One api worker (uvicorn), SQLite, client on the same machine.",
            "",
            "| what | result |",
            "|---|---|",
            *rows,
            "",
        ]
    )
    print(section)
    if args.append is not None:
        with open(args.append, "a") as handle:
            handle.write("\n" + section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
