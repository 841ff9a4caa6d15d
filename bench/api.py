"""The public API under load: req/s and latency per endpoint, beside the ceiling.

One api process (one uvicorn worker) on a SQLite database filled by the conductor's
own code, the load from bench.load in this process on the same machine. Each
endpoint is measured warm (its answer cached), at 4 and at 32 connections, and at 4
once more with py-spy attached, for the profile; the first answer after an inventory
change (a cache miss) is timed on its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import update

from accel.conductor.agents import record_hello
from accel.conductor.reconcile import store_inventory
from accel.db.engine import make_engine, migrate, session_factory
from accel.db.models import Device
from accel.driver.discovery import discover
from accel.driver.fake_sysfs import build_gpu_server
from accel.internal.schemas import DriverOutcome, HardwareList, Kind
from accel.states import DeviceStatus
from bench.cyborg import PROFILE_NAME as CYBORG_PROFILE
from bench.cyborg import CyborgUnavailable, cyborg_api
from bench.load import LoadResult, call, run_load, run_pairs
from bench.profile import Profile, py_spy
from tests.processes import Cluster, bound_socket, url_of, wait_until

CONNECTIONS = (4, 32)


def fill_database(url: str, workdir: Path, nodes: int) -> list[str]:
    """``nodes`` copies of the example GPU server (10 devices each), as a conductor
    stores them; returns the device uuids."""
    tree = build_gpu_server(workdir / "node")
    engine = make_engine(url)
    migrate(engine)
    sessions = session_factory(engine)
    now = dt.datetime.now(dt.UTC)
    uuids: list[str] = []
    for index in range(nodes):
        name = f"node{index:05d}"
        record_hello(sessions, name, f"127.0.0.1:{7000 + index % 50000}", "1.1", now)
        report = HardwareList(
            hardware=[h for kind in Kind for h in discover(kind, tree.root, name)],
            drivers=[DriverOutcome(type=kind, endpoint="x:1", state="ok") for kind in Kind],
        )
        store_inventory(sessions, name, report, now, now, now)
        uuids.extend(str(h.uuid) for h in report.hardware)
    engine.dispose()
    return uuids


def touch_inventory(url: str, uuid: str) -> None:
    """An inventory change, as any writer makes it: the generation moves."""
    engine = make_engine(url)
    try:
        with session_factory(engine).begin() as session:
            session.execute(
                update(Device).where(Device.uuid == uuid).values(status=DeviceStatus.ENABLED)
            )
    finally:
        engine.dispose()


def _row(name: str, result: LoadResult, connections: int, profile: str = "") -> str:
    failed = sum(n for status, n in result.statuses.items() if status >= 400)
    note = f" ({failed} failed)" if failed else ""
    top = f" | {profile}" if profile else " | "
    return f"| {name}, {connections} conn | {result.summary()}{note}{top} |"


def _rows(name: str, pid: int, load: Callable[[int], LoadResult], unit: str = "req/s") -> list[str]:
    """A row per connection count. py-spy takes CPU from a 2-core machine, so the
    4-connection figure is measured unprofiled and its profile from a second run."""
    rows = []
    for connections in CONNECTIONS:
        result = load(connections)
        top = ""
        if connections == CONNECTIONS[0] and py_spy() is not None:
            with Profile(pid) as profile:
                profile.start()
                time.sleep(0.5)  # py-spy attaches
                profiled = load(connections)
                profile.stop()
                top = f"profiled in a second run: {profiled.rate:,.0f} {unit}; {profile.top()}"
        rows.append(_row(name, result, connections, top).replace("req/s", unit))
    return rows


def _measure(url: str, pid: int, name: str, paths: list[str]) -> list[str]:
    asyncio.run(run_load(url, list(dict.fromkeys(paths)), 4))  # every answer cached
    return _rows(name, pid, lambda connections: asyncio.run(run_load(url, paths, connections)))


def _create_profile(url: str) -> None:
    """The device profile the ARQ pairs ask for, as Cyborg's side of the bench has."""
    profile = json.dumps([{"name": "bench-gpu", "groups": [{"resources:PGPU": "1"}]}])
    status, _ = asyncio.run(call(url, "POST", "/v2/device_profiles", profile.encode()))
    assert status == 201, status


def _arq_pairs(url: str, pid: int, count: int, pairs: int) -> list[str]:
    """Accelerator requests created and deleted in pairs (Nova's flow without the bind)."""
    create = ("/v2/accelerator_requests", json.dumps({"device_profile_name": "bench-gpu"}).encode())
    return _rows(
        f"ARQ create+delete pairs, {count} devices",
        pid,
        lambda connections: asyncio.run(run_pairs(url, pairs, connections, create, _delete_path)),
        unit="pairs/s",
    )


def _start_ceiling(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    sock = bound_socket()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.ceiling", "--listen-fd", str(sock.fileno())],
        pass_fds=(sock.fileno(),),
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "ceiling.log", "wb"),  # noqa: SIM115 - the child keeps it
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    url = url_of(sock)
    wait_until(lambda: asyncio.run(call(url, "GET", "/ok"))[0] == 200, "the ceiling app")
    sock.close()
    return process, url


def _first_answer_ms(url: str, database: str, path: str, uuid: str) -> float:
    touch_inventory(database, uuid)
    started = time.perf_counter()
    status, _ = asyncio.run(call(url, "GET", path))
    assert status == 200, status
    return (time.perf_counter() - started) * 1000


def bench_cyborg(workdir: Path, database: Path, uuids: list[str]) -> list[str]:
    """The same reads and ARQ pairs against OpenStack Cyborg's own API server on the
    same inventory, at 4 connections, with fewer requests (it is far slower)."""
    count = len(uuids)
    try:
        with cyborg_api(workdir / "cyborg", database) as cyborg:
            url, version = cyborg.url, cyborg.version
            rows = []
            for name, paths in (
                (f"GET /v2/devices/{{uuid}}, {count} devices", [f"/v2/devices/{u}" for u in uuids]),
                (f"GET /v2/devices, {count} devices", ["/v2/devices"] * 20),
                (f"GET /v2/deployables, {count} devices", ["/v2/deployables"] * 4),
                ("GET /v2/device_profiles", ["/v2/device_profiles"] * 500),
            ):
                result = asyncio.run(run_load(url, paths, CONNECTIONS[0]))
                rows.append(_row(f"Cyborg {version}: {name}", result, CONNECTIONS[0]))
            create = (
                "/v2/accelerator_requests",
                json.dumps({"device_profile_name": CYBORG_PROFILE}).encode(),
            )
            result = asyncio.run(run_pairs(url, 100, CONNECTIONS[0], create, _delete_path))
            rows.append(
                _row(
                    f"Cyborg {version}: ARQ create+delete pairs, {count} devices", result, 4
                ).replace("req/s", "pairs/s")
            )
            return rows
    except CyborgUnavailable as exc:
        return [f"| OpenStack Cyborg | not measured: {exc} | |"]


def _delete_path(body: bytes) -> str:
    uuids = ",".join(arq["uuid"] for arq in json.loads(body)["arqs"])
    return f"/v2/accelerator_requests?arqs={uuids}"


def bench_api(workdir: Path, nodes: int, scale: float = 1.0, cyborg: bool = False) -> list[str]:
    """Rows of the results table for a database of ``nodes`` x 10 devices."""
    database = f"sqlite:///{workdir / f'api-{nodes}.db'}"
    uuids = fill_database(database, workdir, nodes)
    count = len(uuids)
    cluster = Cluster(workdir)
    ceiling, ceiling_url = _start_ceiling(workdir)
    rows = []
    try:
        # A conductor on the same database: deleting an ARQ asks one to unbind it.
        cluster.conductor(database, log_level="warning")
        api = cluster.api(database, log_level="warning")
        pid = api.process.pid
        _create_profile(api.url)
        rows += _measure(
            ceiling_url,
            ceiling.pid,
            "ceiling: minimal ASGI app, GET /ok",
            ["/ok"] * int(20000 * scale),
        )
        one = [f"/v2/devices/{u}" for u in uuids] * max(1, int(20000 * scale) // count)
        cases = [
            (f"GET /v2/devices/{{uuid}}, {count} devices", one),
            (
                f"GET /v2/devices, {count} devices",
                ["/v2/devices"] * int(2000 * scale * 1000 / count),
            ),
            (
                f"GET /v2/deployables, {count} devices",
                ["/v2/deployables"] * int(1000 * scale * 1000 / count),
            ),
            ("GET /v2/device_profiles", ["/v2/device_profiles"] * int(5000 * scale)),
        ]
        for name, paths in cases:
            rows += _measure(api.url, pid, name, paths)
        rows += _arq_pairs(api.url, pid, count, int(2000 * scale))
        for path in ("/v2/devices", "/v2/deployables", f"/v2/devices/{uuids[0]}"):
            ms = _first_answer_ms(api.url, database, path, uuids[0])
            shown = path.replace(uuids[0], "{uuid}")
            rows.append(
                f"| GET {shown}, {count} devices, first answer after a change | {ms:.1f} ms | |"
            )
    finally:
        cluster.stop_all()
        ceiling.terminate()
        ceiling.wait(15)
    if cyborg:
        rows += bench_cyborg(workdir, workdir / f"api-{nodes}.db", uuids)
    return rows
