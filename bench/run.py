"""accel's benchmarks, measured here and appended to a file: discovery, the public API
beside a minimal ASGI app on the same stack (bench.api), a conductor's CPU for a round
of heartbeats (bench.heartbeats), fleet convergence and resync with ``accel sim``
on SQLite and PostgreSQL (bench.fleet), and the fleet page's first load in Chromium
(bench.ui).

    python -m bench.run [--append docs/benchmarks] [--fleet 100,1000,5000]

``--append`` given a folder adds the run's section to the folder's file of the day
(docs/benchmarks/YYYY-MM-DD.md, begun if new); given a file, to that file.

Every loop is bounded by a request count; all traffic stays on loopback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from accel.cli import discover as discover_command
from accel.cli.argv import accel_argv
from accel.driver.discovery import discover
from accel.driver.fake_sysfs import FakeFunction, FakeSysfs
from accel.internal.schemas import Kind
from bench.api import bench_api
from bench.fleet import RELEASE_RATE, bench_fleet
from bench.heartbeats import bench_heartbeats
from bench.memory import bench_memory
from bench.ui import bench_ui
from tests.postgres import server_binaries, throwaway_postgres

NICS = 100
VFS_PER_NIC = 8


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
        accel_argv(discover_command.discover, sysfs_root=root, as_json=True),
        check=True,
        capture_output=True,
    )
    whole = time.perf_counter() - started
    return [
        f"| discovery of {functions} PCI functions ({NICS} NICs x {VFS_PER_NIC} VFs), "
        f"in-process, median of 5 | {statistics.median(timings) * 1000:.1f} ms |",
        f"| `accel discover --json` on the same tree, whole process | {whole * 1000:.0f} ms |",
    ]


def bench_fleets(workdir: Path, sizes: list[int], postgres: bool, release_rate: float) -> list[str]:
    rows = []
    for nodes in sizes:
        database = f"sqlite:///{workdir / f'fleet-{nodes}.db'}"
        rows += bench_fleet(workdir, "SQLite", database, nodes, release_rate).rows()
    if postgres and server_binaries() is not None:
        with throwaway_postgres() as server:
            for nodes in sizes:
                database = server.new_database()
                rows += bench_fleet(workdir, "PostgreSQL", database, nodes, release_rate).rows()
    return rows


def history_file(target: Path, started: dt.datetime) -> Path:
    """The file a run's section goes into: ``target`` itself, or its file of the day."""
    if not target.is_dir():
        return target
    dated = target / f"{started:%Y-%m-%d}.md"
    if not dated.exists():
        dated.write_text(
            f"# Benchmarks of {started:%Y-%m-%d}\n\n"
            "Runs of this date, in the order they were made. The current figures are in\n"
            f"[../{target.name}.md](../{target.name}.md).\n"
        )
        print(f"begun {dated}: add it to the history in {target.name}.md", file=sys.stderr)
    return dated


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--append",
        type=Path,
        default=None,
        help="A file to append the run's section to, or a folder of one file a day.",
    )
    parser.add_argument(
        "--fleet", default="100,1000", help="Simulated fleet sizes (nodes x 8 devices)."
    )
    parser.add_argument("--no-postgres", action="store_true", help="Fleets on SQLite only.")
    parser.add_argument(
        "--release-rate",
        type=float,
        default=RELEASE_RATE,
        help="Simulated nodes a second that start saying hello, the whole fleet together.",
    )
    parser.add_argument(
        "--no-cyborg",
        action="store_true",
        help="Skip OpenStack Cyborg's own API (else installed once into ~/.cache/accel-bench, "
        "or taken from ACCEL_BENCH_CYBORG_VENV) on the 1,000-device data.",
    )
    parser.add_argument(
        "--api-nodes", default="100,1000", help="API database sizes, in nodes of 10 devices."
    )
    parser.add_argument(
        "--heartbeat-nodes", type=int, default=5000, help="Agents in the heartbeat rounds."
    )
    parser.add_argument(
        "--only", choices=["discovery", "memory", "api", "heartbeats", "fleet", "ui"], default=None
    )
    parser.add_argument(
        "--ui-nodes", type=int, default=1000, help="Nodes of 10 devices for the fleet page."
    )
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC)
    load_before = load_average()
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="accel-bench-") as folder:
        workdir = Path(folder)
        if args.only in (None, "discovery"):
            rows += bench_discovery(workdir)
        if args.only in (None, "memory"):
            wide = workdir / "wide-node"
            rows += bench_memory(workdir, wide, build_wide_tree(wide))
        if args.only in (None, "api"):
            for nodes in (int(n) for n in args.api_nodes.split(",") if n):
                # Cyborg on the 1,000-device data only: its lists take seconds there.
                rows += bench_api(workdir, nodes, cyborg=not args.no_cyborg and nodes == 100)
        if args.only in (None, "heartbeats"):
            rows += bench_heartbeats(workdir, args.heartbeat_nodes)
        if args.only in (None, "fleet"):
            sizes = [int(n) for n in args.fleet.split(",") if n]
            rows += bench_fleets(workdir, sizes, not args.no_postgres, args.release_rate)
        if args.only in (None, "ui"):
            rows += bench_ui(args.ui_nodes)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}"
    )
    command = "python -m bench.run " + " ".join(sys.argv[1:])
    section = "\n".join(
        [
            f"## {started:%Y-%m-%d %H:%M} UTC: `{command.strip()}`",
            "",
            f"Machine: {machine}. One api worker (uvicorn), SQLite unless named; "
            "PostgreSQL is a throwaway server with fsync off; load generator and "
            f"simulator on the same machine. Load average before / after: {load_before} "
            f"and {load_average()} (1, 5, 15 min).",
            "",
            "| what | result | profile: busiest functions (own samples, idle left out) |",
            "|---|---|---|",
            *rows,
            "",
        ]
    )
    print(section)
    if args.append is not None:
        with open(history_file(args.append, started), "a") as handle:
            handle.write("\n" + section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
