"""Resident memory of each daemon, as separate processes on one wide node.

A driver discovers a tree of 1,000 PCI functions (bench.run's wide tree), its agent
relays them, a conductor stores them in SQLite, and an api answers the device and
deployable lists from that database. Each process's resident size is read from
/proc once the inventory is stored and the api has answered (its cache filled).
The conductor at fleet scale is measured by bench.fleet.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select

from accel.db.engine import make_engine
from accel.db.models import Device
from bench.load import call
from bench.procfs import rss_mib
from tests.processes import Cluster, wait_until


def bench_memory(workdir: Path, tree: Path, functions: int) -> list[str]:
    database = f"sqlite:///{workdir / 'memory.db'}"
    (workdir / "memory").mkdir(exist_ok=True)
    cluster = Cluster(workdir / "memory")
    engine = make_engine(database)
    try:
        conductor = cluster.conductor(database, log_level="warning")
        agent = cluster.agent([conductor.endpoint], "wide-node", log_level="warning")
        driver = cluster.driver("NIC", agent, tree, log_level="warning")

        def stored() -> int:
            with engine.connect() as connection:
                return connection.scalar(select(func.count()).select_from(Device)) or 0

        devices = wait_until(stored, "the wide node's inventory to be stored", timeout=120)
        api = cluster.api(database, log_level="warning")
        for path in ("/v2/devices", "/v2/deployables"):
            status, _ = asyncio.run(call(api.url, "GET", path))
            assert status == 200, (path, status)
        sizes = {
            "driver": rss_mib(driver.process.pid),
            "agent": rss_mib(agent.process.pid),
            "conductor": rss_mib(conductor.process.pid),
            "api": rss_mib(api.process.pid),
        }
    finally:
        engine.dispose()
        cluster.stop_all()
    shown = ", ".join(f"{name} {mib:.0f} MiB" for name, mib in sizes.items())
    return [
        f"| resident memory, one node of {functions} PCI functions ({devices} devices), "
        f"each a process; the api after answering both lists | {shown} | |"
    ]
