"""Placement reporting at fleet scale, against a real Placement 16.

``python -m bench.placement [--nodes 1000] [--devices 8] [--workers 4 --postgres]
[--concurrency 8] [--profile]``: fills an accel database
with the fleet, makes each node's compute-node provider as nova-compute would, then
times the conductor's Placement loop (``accel.conductor.placement``) and counts its
calls for (1) the first report, (2) a round with nothing changed, (3) a resync after
1% of the devices changed (put in maintenance: reserved = total). Prints a Markdown
table for docs/benchmarks.md, with where each phase's time went
(bench/placement_timing.py). Placement runs on SQLite with one gunicorn worker (its
test setup), or as deployed on PostgreSQL (``tests/postgres.py``'s throwaway server)
with ``--workers``. Needs ``scripts/ensure-placement`` (and ``scripts/ensure-postgres``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.agents import record_hello
from accel.conductor.placement.loop import PlacementLoop, placement_loop
from accel.conductor.placement.settings import PlacementSettings
from accel.conductor.placement.state import pending_count
from accel.conductor.reconcile import FinishedSync, store_inventories
from accel.db.engine import make_engine, migrate, session_factory
from accel.db.models import Device
from accel.driver.discovery import discover
from accel.driver.fake_sysfs import build_gpu_server
from accel.internal.schemas import DriverOutcome, HardwareEntry, HardwareList, Kind
from accel.openstack.credentials import OpenStackCredentials
from accel.states import DeviceStatus
from bench.placement_timing import ACCESS_FORMAT, Clocks, Split, TimedAdapter, load_average
from bench.profile import Profile
from tests.placement_service import (
    TOKEN,
    ThrowawayPlacement,
    placement_venv,
    throwaway_placement,
)
from tests.postgres import throwaway_postgres

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def node_hardware(template: list[HardwareEntry], node: str, count: int) -> HardwareList:
    """``count`` GPUs on distinct buses, with uuids of their own on each node."""
    entries = []
    for index in range(count):
        base = template[index % len(template)]
        address = f"0000:{0x17 + index:02x}:00.0"
        assert base.pci is not None
        pci = base.pci.model_copy(update={"address": address})
        entries.append(
            base.model_copy(
                update={
                    "uuid": uuid.uuid5(uuid.NAMESPACE_DNS, f"{node}/{address}"),
                    "pci": pci,
                }
            )
        )
    return HardwareList(
        hardware=entries, drivers=[DriverOutcome(type=Kind.GPU, endpoint="x:1", state="ok")]
    )


def fill(sessions: sessionmaker[Session], nodes: list[str], devices: int, work: Path) -> None:
    template = discover(Kind.GPU, build_gpu_server(work / "tree").root, "template")
    for start in range(0, len(nodes), 100):
        batch = nodes[start : start + 100]
        for node in batch:
            record_hello(sessions, node, "127.0.0.1:6671", "1.5", NOW)
        store_inventories(
            sessions,
            [
                FinishedSync(node, node_hardware(template, node, devices), NOW, NOW, NOW, None)
                for node in batch
            ],
        )


def make_roots(url: str, nodes: list[str]) -> None:
    headers = {"X-Auth-Token": TOKEN, "OpenStack-API-Version": "placement 1.26"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for node in nodes:
            client.post("/resource_providers", json={"name": node}).raise_for_status()


def until_reported(loop: PlacementLoop, clocks: Clocks) -> tuple[Split, int]:
    """The loop run as a conductor runs it (``PlacementLoop.run``) until no node is
    pending: the clocks' split, and no rounds (the loop claims as slots free)."""

    def pending() -> int:
        with loop.sessions() as session:
            return pending_count(session)

    async def reported() -> None:
        await loop.notice()  # what changed is pending before the loop starts
        running = asyncio.create_task(loop.run())
        deadline = time.monotonic() + 3 * 3600
        try:
            while await asyncio.to_thread(pending) or loop.running:
                if running.done() or time.monotonic() > deadline:
                    raise RuntimeError("the report never finished")
                await asyncio.sleep(0.05)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    before = clocks.read()
    asyncio.run(reported())
    return clocks.since(before), 0


@contextmanager
def placement_service(
    venv: Path, work: Path, workers: int, on_postgres: bool
) -> Iterator[tuple[ThrowawayPlacement, int | None]]:
    """Placement as the bench asked: SQLite and one worker, or PostgreSQL and several;
    with the PostgreSQL server's pid."""
    options = ("--access-logfile", str(work / "access.log"), "--access-logformat", ACCESS_FORMAT)
    if not on_postgres:
        with throwaway_placement(venv, work / "placement", workers=workers, options=options) as p:
            yield p, None
        return
    with throwaway_postgres() as server:
        database = server.new_database().replace("postgresql://", "postgresql+psycopg://")
        pid = int((server.folder / "data" / "postmaster.pid").read_text().split()[0])
        with throwaway_placement(venv, work / "placement", database, workers, options) as p:
            yield p, pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="Placement's gunicorn workers")
    parser.add_argument("--postgres", action="store_true", help="Placement on PostgreSQL")
    parser.add_argument("--concurrency", type=int, default=PlacementSettings.concurrency)
    parser.add_argument("--profile", action="store_true", help="py-spy the first report")
    args = parser.parse_args()
    venv = placement_venv()
    if venv is None:
        raise SystemExit("no Placement: run scripts/ensure-placement")
    # In memory (tmpfs where there is one): Placement on SQLite commits every write.
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    profile_top = ""
    with tempfile.TemporaryDirectory(dir=shm) as folder:
        work = Path(folder)
        nodes = [f"bench-{n:05d}" for n in range(args.nodes)]
        engine = make_engine(f"sqlite:///{work / 'accel.db'}")
        migrate(engine)
        sessions = session_factory(engine)
        fill(sessions, nodes, args.devices, work)
        with placement_service(venv, work, args.workers, args.postgres) as (placement, pg):
            make_roots(placement.url, nodes)
            credentials = OpenStackCredentials(token=TOKEN, timeout=30.0)
            # No drift check during the measured rounds (a first report slower than the
            # check interval would make the first nodes due again): it has a row of its own.
            quiet = PlacementSettings(
                check_interval=86_400.0, concurrency=args.concurrency, batch=2 * args.concurrency
            )
            loop = placement_loop(sessions, "bench", credentials, placement.url, quiet)
            clocks = Clocks(
                TimedAdapter(loop.client.adapter), placement.process.pid, work / "access.log", pg
            )
            with Profile(os.getpid()) as profile:
                if args.profile:
                    profile.start()
                rows = [("first report", *until_reported(loop, clocks))]
                profile.stop()
                profile_top = profile.top_inclusive("accel/", 10)
            rows.append(("nothing changed", *until_reported(loop, clocks)))
            changed = max(1, args.nodes * args.devices // 100)
            with sessions.begin() as session:
                # 1% of the devices, one on each of as many nodes, put in maintenance.
                for node in nodes[:changed]:
                    session.execute(
                        update(Device)
                        .where(Device.hostname == node, Device.pci_address == "0000:17:00.0")
                        .values(status=DeviceStatus.MAINTAINING)
                    )
            rows.append((f"resync, {changed} devices (1%) changed", *until_reported(loop, clocks)))
            # Every node due for its drift check, all claimed in one round.
            every = dataclasses.replace(quiet, check_interval=0, batch=len(nodes))
            checking = placement_loop(sessions, "bench", credentials, placement.url, every)
            clocks.timed = TimedAdapter(checking.client.adapter)
            before = clocks.read()
            asyncio.run(checking.round())
            rows.append(("drift check of every node, none drifted", clocks.since(before), 1))
    engine.dispose()
    print_table(args, rows, profile_top)


def print_table(args: argparse.Namespace, rows: list[tuple[str, Split, int]], top: str) -> None:
    providers = args.nodes * args.devices
    database = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"\nPlacement 16 ({database}, {args.workers} gunicorn worker(s)); {args.nodes} nodes x "
        f"{args.devices} GPUs; {args.concurrency} nodes at once; load {load_average()}"
    )
    print(
        "| what | seconds | Placement calls | calls per node | calls per provider | rounds "
        "| ms per call, conductor waited | ms per call, Placement worked "
        "| CPU s, conductor | CPU s, Placement | CPU s, its PostgreSQL |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for what, split, rounds in rows:
        waited, worked = split.ms_per_call()
        print(
            f"| {what} | {split.wall:.1f} | {split.calls} | {split.calls / args.nodes:.2f} "
            f"| {split.calls / providers:.3f} | {rounds or 'run'} | {waited:.1f} | {worked:.1f} "
            f"| {split.conductor_cpu:.1f} | {split.placement_cpu:.1f} "
            f"| {split.database_cpu:.1f} |"
        )
    if top:
        print(f"\nconductor's first report, py-spy (inclusive, accel/): {top}")


if __name__ == "__main__":
    main()
