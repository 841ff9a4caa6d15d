"""Placement reporting at fleet scale, against a real Placement 16 (SQLite, one worker).

``python -m bench.placement [--nodes 1000] [--devices 8]``: fills an accel database
with the fleet, makes each node's compute-node provider as nova-compute would, then
times the conductor's Placement loop (``accel.conductor.placement``) and counts its
calls for (1) the first report, (2) a round with nothing changed, (3) a resync after
1% of the devices changed (put in maintenance: reserved = total). Prints a Markdown
table for docs/benchmarks.md. Needs ``scripts/ensure-placement``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
import uuid
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
from tests.placement_service import TOKEN, placement_venv, throwaway_placement

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


def until_reported(loop: PlacementLoop) -> tuple[float, int, int]:
    """Rounds until no node is pending: seconds, calls, rounds."""
    calls, started, rounds = loop.client.calls, time.perf_counter(), 0
    while True:
        rounds += 1
        asyncio.run(loop.round())
        with loop.sessions() as session:
            if pending_count(session) == 0:
                break
        if rounds > 1000:
            raise RuntimeError("the report never finished")
    return time.perf_counter() - started, loop.client.calls - calls, rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=8)
    args = parser.parse_args()
    venv = placement_venv()
    if venv is None:
        raise SystemExit("no Placement: run scripts/ensure-placement")
    # In memory (tmpfs where there is one): Placement on SQLite commits every write.
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=shm) as folder:
        work = Path(folder)
        nodes = [f"bench-{n:05d}" for n in range(args.nodes)]
        engine = make_engine(f"sqlite:///{work / 'accel.db'}")
        migrate(engine)
        sessions = session_factory(engine)
        fill(sessions, nodes, args.devices, work)
        with throwaway_placement(venv, work / "placement") as placement:
            make_roots(placement.url, nodes)
            credentials = OpenStackCredentials(token=TOKEN, timeout=30.0)
            loop = placement_loop(
                sessions, "bench", credentials, placement.url, PlacementSettings()
            )
            rows = [("first report", *until_reported(loop))]
            rows.append(("nothing changed, one round", *until_reported(loop)))
            changed = max(1, args.nodes * args.devices // 100)
            with sessions.begin() as session:
                # 1% of the devices, one on each of as many nodes, put in maintenance.
                for node in nodes[:changed]:
                    session.execute(
                        update(Device)
                        .where(Device.hostname == node, Device.pci_address == "0000:17:00.0")
                        .values(status=DeviceStatus.MAINTAINING)
                    )
            rows.append((f"resync, {changed} devices (1%) changed", *until_reported(loop)))
    engine.dispose()
    providers = args.nodes * args.devices
    print(f"\nPlacement 16 (SQLite, 1 gunicorn worker); {args.nodes} nodes x {args.devices} GPUs")
    print("| what | seconds | Placement calls | calls per node | calls per provider | rounds |")
    print("|---|---|---|---|---|---|")
    for what, seconds, calls, rounds in rows:
        print(
            f"| {what} | {seconds:.1f} | {calls} | {calls / args.nodes:.2f} "
            f"| {calls / providers:.3f} | {rounds} |"
        )


if __name__ == "__main__":
    main()
