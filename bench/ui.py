"""The fleet page in a real browser: how long its first load of a large fleet takes,
and the screenshots of docs/ui.md.

    python -m bench.run --only ui [--ui-nodes 1000]   (the figures, in bench.run's table)
    python -m bench.ui [--nodes 1000] [--loads 5]
    python -m bench.ui --refreshes-only [--nodes 1000]   (what a polling tab costs the api)
    python -m bench.ui --screenshots docs/ui

The fleet is written into a SQLite database by the conductor's own code (a hello and
a stored inventory per node, each node the example GPU server's tree), then served by
a real ``accel api`` process and loaded by Debian's Chromium through Playwright. Each
load is in a fresh browser context (nothing cached): the time runs from asking for the
page until its table holds every node. A refresh is what an open tab asks every few
seconds: the content alone with the ETag it holds (``refresh_costs``), timed over
HTTP without the browser, on an unchanged fleet. All traffic stays on loopback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import Browser, sync_playwright

from accel.api.ui.views import ROWS_SHOWN
from accel.cli import fleet_daemons
from accel.cli.argv import accel_argv
from accel.conductor.agents import record_hello
from accel.conductor.reconcile import store_inventory
from accel.db.engine import make_engine, migrate, session_factory
from accel.driver.discovery import discover
from accel.driver.fake_sysfs import build_gpu_server
from accel.internal.schemas import DriverOutcome, HardwareList, Kind
from bench.daemons import answers, free_port, spawn, stop
from tests.processes import wait_until

LOADS = 5
REFRESHES = 20
T0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
DRIVERS = [DriverOutcome(type=kind, endpoint="127.0.0.1:1", state="ok") for kind in Kind]


def seed(database: str, workdir: Path, nodes: int, pull: int = 0) -> int:
    """``nodes`` nodes, each the example GPU server; the first ``pull`` nodes then lose
    a GPU (vanished, with its alarm). How many devices were stored."""
    engine = make_engine(database)
    migrate(engine)
    sessions = session_factory(engine)
    tree = build_gpu_server(workdir / "tree")
    stored = 0
    earlier = T0 - dt.timedelta(minutes=5)
    for index in range(nodes):
        name = f"node{index:04d}"
        record_hello(sessions, name, f"127.0.0.1:{10000 + index}", "1.4", T0)
        hardware = [entry for kind in Kind for entry in discover(kind, tree.root, name)]
        store_inventory(
            sessions,
            name,
            HardwareList(hardware=hardware, drivers=DRIVERS),
            earlier,
            earlier,
            earlier,
        )
        stored += len(hardware)
        if index < pull:
            later = T0
            kept = [entry for entry in hardware if entry.acc_specs.device_type != "GPU"]
            kept += [entry for entry in hardware if entry.acc_specs.device_type == "GPU"][1:]
            store_inventory(
                sessions, name, HardwareList(hardware=kept, drivers=DRIVERS), later, later, later
            )
    engine.dispose()
    return stored


def start_api(database: str, workdir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    log = workdir / "api.log"
    api = spawn(
        accel_argv(
            fleet_daemons.api,
            listen=f"127.0.0.1:{port}",
            database=database,
            auth="noauth",
            log_level="warning",
        ),
        log,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(url + "/healthz"), "the api", on_timeout=log.read_text)
    return url, api


def first_loads(browser: Browser, url: str, rows: str, count: int, loads: int) -> list[float]:
    """Seconds from asking for ``url`` until ``rows`` matches ``count`` rows, per load."""
    times = []
    for _ in range(loads):
        context = browser.new_context()
        page = context.new_page()
        started = time.perf_counter()
        page.goto(url)
        page.wait_for_function(
            "([selector, count]) => document.querySelectorAll(selector).length >= count",
            arg=[rows, count],
            timeout=60_000,
        )
        times.append(time.perf_counter() - started)
        context.close()
    return times


def refresh_costs(url: str, count: int = REFRESHES) -> list[float]:
    """Seconds per refresh of an open tab's content (``Accel-UI-Part: content`` with the
    ETag of the last answer) while the fleet stands still: each one a 304."""
    headers = {"accel-ui-part": "content"}
    times = []
    with httpx.Client(timeout=60.0) as client:
        first = client.get(url, headers=headers)
        first.raise_for_status()
        headers["if-none-match"] = first.headers["etag"]
        for _ in range(count):
            started = time.perf_counter()
            answer = client.get(url, headers=headers)
            times.append(time.perf_counter() - started)
            assert answer.status_code == 304, answer.status_code
    return times


def refresh_rows(url: str, nodes: int) -> list[str]:
    fleet = refresh_costs(url + "/ui/")
    table = refresh_costs(url + "/ui/devices")
    return [
        f"| fleet page /ui/, a tab's refresh of an unchanged fleet (304), {nodes:,} nodes,"
        f" median of {len(fleet)} | {statistics.median(fleet) * 1000:.1f} ms"
        f" (max {max(fleet) * 1000:.1f} ms) | - |",
        f"| device table /ui/devices, a tab's refresh of an unchanged fleet (304),"
        f" median of {len(table)} | {statistics.median(table) * 1000:.1f} ms"
        f" (max {max(table) * 1000:.1f} ms) | - |",
    ]


def bench_refreshes(nodes: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="accel-bench-ui-") as folder:
        workdir = Path(folder)
        database = f"sqlite:///{workdir / 'accel.db'}"
        seed(database, workdir, nodes)
        url, api = start_api(database, workdir)
        try:
            return refresh_rows(url, nodes)
        finally:
            stop(api)


def bench_ui(nodes: int, loads: int = LOADS) -> list[str]:
    """Rows of bench.run's table: the fleet page's and the device table's first load."""
    with tempfile.TemporaryDirectory(prefix="accel-bench-ui-") as folder:
        workdir = Path(folder)
        database = f"sqlite:///{workdir / 'accel.db'}"
        devices = seed(database, workdir, nodes)
        url, api = start_api(database, workdir)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium(), headless=True)
                fleet = first_loads(
                    browser, url + "/ui/", "#nodes tbody tr[data-node]", nodes, loads
                )
                shown = min(devices, ROWS_SHOWN)
                table = first_loads(
                    browser, url + "/ui/devices", "#devices tbody tr[data-uuid]", shown, loads
                )
                version = browser.version.split(".")[0]
                browser.close()
            refreshes = refresh_rows(url, nodes)
        finally:
            stop(api)
    return [
        f"| fleet page /ui/, first load in Chromium {version}, {nodes:,} nodes"
        f" ({devices:,} devices), median of {loads}; goal under 1 s"
        f" | {statistics.median(fleet) * 1000:.0f} ms (first {fleet[0] * 1000:.0f} ms,"
        f" max {max(fleet) * 1000:.0f} ms) | - |",
        f"| device table /ui/devices, first load, same fleet ({shown} rows shown),"
        f" median of {loads}; no goal | {statistics.median(table) * 1000:.0f} ms"
        f" (first {table[0] * 1000:.0f} ms, max {max(table) * 1000:.0f} ms) | - |",
        *refreshes,
    ]


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        raise SystemExit("no chromium here: run scripts/ensure-chromium")
    return found


def screenshots(folder: Path) -> None:
    """The main views of a small fleet (three nodes, one GPU gone) as PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="accel-ui-shots-") as scratch:
        workdir = Path(scratch)
        database = f"sqlite:///{workdir / 'accel.db'}"
        seed(database, workdir, 3, pull=1)
        url, api = start_api(database, workdir)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium(), headless=True)
                page = browser.new_page(viewport={"width": 1200, "height": 640})
                views = {
                    "fleet": "/ui/",
                    "devices": "/ui/devices?node=node0000",
                    "alarms": "/ui/alarms",
                }
                for name, path in views.items():
                    page.goto(url + path)
                    page.screenshot(path=str(folder / f"{name}.png"))
                page.goto(url + "/ui/alarms")
                page.locator("#alarms a").first.click()
                page.wait_for_selector("#history")
                page.screenshot(path=str(folder / "device.png"), full_page=True)
                browser.close()
        finally:
            stop(api)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--loads", type=int, default=LOADS)
    parser.add_argument(
        "--refreshes-only", action="store_true", help="time a tab's refreshes, no browser"
    )
    parser.add_argument("--screenshots", type=Path, help="write the docs' PNGs here instead")
    args = parser.parse_args(argv)
    if args.screenshots is not None:
        screenshots(args.screenshots)
        return 0
    if args.refreshes_only:
        print("\n".join(bench_refreshes(args.nodes)))
        return 0
    print("\n".join(bench_ui(args.nodes, args.loads)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
