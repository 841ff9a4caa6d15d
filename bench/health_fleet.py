"""The conductor's cost of device health per fleet: ``python -m bench.health_fleet``.

Health costs the conductor nothing while it holds still: a node's report keeps its
ETag, its heartbeat confirms it, and no sync runs. It costs when a report changes,
so this measures the conductor's store (``store_inventories``, in batches as the
sync loop's group commit hands them over, on SQLite) for a fleet of ``--nodes``
nodes of 8 GPUs, round by round, each round being what one heartbeat interval
brings the conductor:

* 1% of the devices turn failed (each with its alarm), then recover;
* the same number of devices change something else (no health), the cost without it;
* every device's health report changes, its state the same (a driver that moved a
  check's ``last_seen`` at every poll would do this): the cost of churn.

CPU seconds of this process for each round, which is the conductor's store work
without its HTTP; the rows go to stdout as a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
import uuid
from collections.abc import Callable, Collection
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.agents import record_hello
from accel.conductor.reconcile import FinishedSync, store_inventories
from accel.db.engine import make_engine, migrate, session_factory
from accel.db.models import Alarm
from accel.internal.health_schemas import DeviceHealth, HealthCheck
from accel.internal.schemas import DriverOutcome, HardwareEntry, HardwareList, Kind
from accel.states import AlarmState, CheckSeverity, HealthState

GPUS = 8
# Syncs per transaction: the sync loop's group commit hands over about this many.
BATCH = 64
T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)

Health = Callable[[int, int], DeviceHealth | None]


def reading(state: HealthState, seen: dt.datetime) -> DeviceHealth:
    severity = CheckSeverity.FAILED if state == HealthState.FAILED else CheckSeverity.OK
    checks = [
        HealthCheck(
            check=name, severity=severity, value="0", first_seen=T0, last_seen=seen, count=1
        )
        for name in ("aer_fatal", "aer_nonfatal", "link_width", "config_space")
    ]
    return DeviceHealth(state=state, since=T0, checks=checks)


def entry(node: int, gpu: int, health: DeviceHealth | None, name: str = "GPU") -> HardwareEntry:
    return HardwareEntry.model_validate(
        {
            "uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"bench/{node}/{gpu}")),
            "acc_specs": {"num": 1, "device_type": "GPU"},
            "acc_status": {"setup_required": False, "reboot_required": False},
            "pci": {
                "address": f"0000:{gpu + 1:02x}:00.0",
                "vendor_id": "10de",
                "product_id": "2331",
                "class_code": "030200",
                "product_name": name,
            },
            "health": health,
        }
    )


def report(node: int, health: Health, renamed: Collection[tuple[int, int]] = ()) -> HardwareList:
    return HardwareList(
        hardware=[
            entry(node, gpu, health(node, gpu), "GPU2" if (node, gpu) in renamed else "GPU")
            for gpu in range(GPUS)
        ],
        drivers=[DriverOutcome(type=Kind.GPU, endpoint="x:1", state="ok")],
    )


def store_round(
    sessions: sessionmaker[Session],
    nodes: list[int],
    health: Health,
    at: dt.datetime,
    renamed: Collection[tuple[int, int]] = (),
) -> float:
    """CPU seconds to store these nodes' reports."""
    syncs = [
        FinishedSync(f"node{n}", report(n, health, renamed), at, at, at + dt.timedelta(minutes=1))
        for n in nodes
    ]
    started = time.process_time()
    for index in range(0, len(syncs), BATCH):
        for outcome in store_inventories(sessions, syncs[index : index + BATCH]):
            if isinstance(outcome, Exception):
                raise outcome
    return time.process_time() - started


def active_alarms(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return (
            session.scalar(
                select(func.count()).select_from(Alarm).where(Alarm.state == AlarmState.ACTIVE)
            )
            or 0
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=5000)
    args = parser.parse_args()
    nodes = list(range(args.nodes))
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{Path(folder) / 'bench.db'}")
        migrate(engine)
        sessions = session_factory(engine)
        for node in nodes:
            record_hello(sessions, f"node{node}", "127.0.0.1:1", "1.6", T0)
        ok: Health = lambda node, gpu: reading(HealthState.OK, T0)  # noqa: E731
        first = store_round(sessions, nodes, ok, T0)
        # 1% of the devices, one per node on 8% of the nodes.
        failing = {(n, 0) for n in nodes[:: max(1, 100 // GPUS)]}
        devices = len(failing)

        def some_fail(node: int, gpu: int) -> DeviceHealth:
            failed = (node, gpu) in failing
            return reading(HealthState.FAILED if failed else HealthState.OK, T0)

        touched = sorted({n for n, _ in failing})
        rows = [(f"first inventory, {args.nodes * GPUS} devices with health", first)]
        cost = store_round(sessions, touched, some_fail, T0)
        rows.append((f"{devices} devices turn failed ({len(touched)} nodes)", cost))
        alarms = active_alarms(sessions)
        rows.append((f"the same {devices} recover", store_round(sessions, touched, ok, T0)))
        rows.append(
            (
                f"{devices} devices change a product name, health unchanged (no-health baseline)",
                store_round(sessions, touched, ok, T0, renamed=failing),
            )
        )
        later = T0 + dt.timedelta(seconds=10)
        churn: Health = lambda node, gpu: reading(HealthState.OK, later)  # noqa: E731
        rows.append(
            (
                f"every device's checks re-read (last_seen moved), {args.nodes} nodes",
                store_round(sessions, nodes, churn, later),
            )
        )
        engine.dispose()
    print(f"alarms raised by the failing round: {alarms}")
    print("| round, SQLite, in-process store | CPU s |")
    print("|---|---|")
    for what, seconds in rows:
        print(f"| {what} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
