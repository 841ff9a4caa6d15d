"""A compute node's footprint: the agent and its drivers as ``accel up`` runs them.

On the example GPU server (examples/gpu-server, the tree ``make run`` reads) and on
issue 25's big node (bench/trees/big-node.toml: 8 GPUs, 4 QAT PFs with 16 VFs each,
2 NICs with 64 VFs each), the node's processes are started from ``node_parts``
(accel.cli.up), the very command lines ``accel up`` runs, beside a conductor that
they report to (not counted: it is the fleet's). Three figures per tree:

- from starting the node to the first complete ``GET /v1/hardware`` on the agent
  (every driver reporting, none failed);
- the node's CPU over a quiet period at the default intervals (heartbeat, hello,
  resync), from ``/proc/PID/stat`` of every node process;
- the node's memory at the end of that period: the sum of ``Pss`` in
  ``/proc/PID/smaps_rollup`` over the node's processes (and their resident sizes).

Both layouts are measured in the same run: the drivers served in the agent's process
(``accel up``'s default) and each driver its own process (``--driver-processes``).

``--uevents``: the drivers watch this host's kernel uevents as on a node's own sysfs
(bench.uevent_node), so a quiet minute's heartbeats skip their scans as a node's do;
without it a fake tree is scanned at every discovery.

Run: ``python -m bench.node_footprint [--quiet-seconds 60] [--only example|big]
[--layout built-in|processes|both] [--uevents]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from accel.cli.up import node_parts
from accel.driver.fake_sysfs import build_from_description
from accel.internal.schemas import Kind
from accel.internal.versions import HEADER, Feature, format_version
from accel.sockets import bind
from accel.supervisor import Supervisor
from bench.procfs import cpu_seconds, rss_mib
from tests.processes import TOKEN, Cluster

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_TREE = ROOT / "examples" / "gpu-server"
BIG_NODE = Path(__file__).resolve().parent / "trees" / "big-node.toml"
# Long enough for one periodic resync (60 s by default) to fall inside it.
QUIET_SECONDS = 60.0
# The first sync and its follow-ups settle before the quiet period starts.
SETTLE_SECONDS = 5.0
START_LIMIT_SECONDS = 60.0


@dataclass(frozen=True)
class Footprint:
    tree: str
    layout: str
    processes: int
    first_answer_s: float
    hardware: int
    cpu_ms_per_s: float
    pss_mib: float
    rss_mib: float


def pss_mib(pid: int) -> float:
    """Proportional set size now, in MiB: shared pages split among their sharers."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def node_pids(supervisor: Supervisor) -> list[int]:
    """The node's processes: the parts, and any process a part started."""
    pids = [part.process.pid for part in supervisor.parts if part.process is not None]
    children: list[int] = []
    for pid in pids:
        try:
            tasks = Path(f"/proc/{pid}/task").iterdir()
            for task in tasks:
                text = (task / "children").read_text().split()
                children.extend(int(child) for child in text)
        except OSError:
            continue
    return pids + children


def environment() -> dict[str, str]:
    """As ``accel up`` gives its parts: this environment without its ACCEL_ settings."""
    return {key: value for key, value in os.environ.items() if not key.startswith("ACCEL_")}


def complete_answer(client: httpx.Client, agent_url: str) -> dict[str, Any] | None:
    """The agent's hardware answer once every kind's driver reports and none failed."""
    try:
        answer: dict[str, Any] = client.get(
            agent_url + "/v1/hardware",
            headers={HEADER: format_version(Feature.GENERATIONS.since)},
        ).json()
    except (httpx.HTTPError, ValueError):
        return None
    drivers = answer.get("drivers") or []
    if len(drivers) == len(Kind) and all(d["state"] == "ok" for d in drivers):
        return answer
    return None


def measure(
    name: str,
    tree: Path,
    workdir: Path,
    quiet: float,
    driver_processes: bool,
    uevents: bool = False,
) -> Footprint:
    workdir.mkdir(parents=True, exist_ok=True)
    token_file = workdir / "internal-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    cluster = Cluster(workdir)
    conductor = cluster.conductor(f"sqlite:///{workdir / 'accel.db'}", log_level="warning")
    agent_socket = bind("127.0.0.1:0")
    host, port = agent_socket.getsockname()
    agent_url = f"http://{host}:{port}"
    parts = node_parts(
        agent_socket, conductor.url, tree.resolve(), token_file, 10.0, "node", driver_processes
    )
    if uevents:
        for part in parts:
            part.argv[1:3] = ["-m", "bench.uevent_node"]
    supervisor = Supervisor(parts, workdir / "logs", environment(), on_event=print)
    client = httpx.Client(timeout=2.0, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        started = time.monotonic()
        for part in parts:
            supervisor.start(part)
        answer = complete_answer(client, agent_url)
        while answer is None:
            if time.monotonic() - started > START_LIMIT_SECONDS:
                raise AssertionError(f"no complete answer from the {name} node; see {workdir}")
            supervisor.check()
            time.sleep(0.01)  # the figure's resolution
            answer = complete_answer(client, agent_url)
        first = time.monotonic() - started
        time.sleep(SETTLE_SECONDS)
        pids = node_pids(supervisor)
        before = {pid: cpu_seconds(pid) for pid in pids}
        begun = time.monotonic()
        time.sleep(quiet)
        used = sum(cpu_seconds(pid) - before[pid] for pid in pids)
        elapsed = time.monotonic() - begun
        supervisor.check()  # a part that died would not be measured
        assert all(p.process is not None and p.process.poll() is None for p in parts)
        return Footprint(
            tree=name,
            layout="a process per driver" if driver_processes else "drivers in the agent",
            processes=len(pids),
            first_answer_s=first,
            hardware=len(answer["hardware"]),
            cpu_ms_per_s=used * 1000 / elapsed,
            pss_mib=sum(pss_mib(pid) for pid in pids),
            rss_mib=sum(rss_mib(pid) for pid in pids),
        )
    finally:
        client.close()
        supervisor.stop()
        agent_socket.close()
        cluster.stop_all()


def rows(results: list[Footprint], quiet: float) -> list[str]:
    lines = [
        "| node | layout | processes | first complete GET /v1/hardware | hardware | CPU idle "
        f"({quiet:g} s, default intervals) | PSS (sum) | RSS (sum) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.tree} | {r.layout} | {r.processes} | {r.first_answer_s * 1000:.0f} ms "
            f"| {r.hardware} "
            f"| {r.cpu_ms_per_s:.2f} ms/s | {r.pss_mib:.1f} MiB | {r.rss_mib:.1f} MiB |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet-seconds", type=float, default=QUIET_SECONDS)
    parser.add_argument("--only", choices=["example", "big"], default=None)
    parser.add_argument(
        "--layout",
        choices=["built-in", "processes", "both"],
        default="both",
        help="Drivers in the agent's process (accel up's default), each its own, or both.",
    )
    parser.add_argument(
        "--uevents",
        action="store_true",
        help="The drivers watch this host's kernel uevents, as on a node's own sysfs.",
    )
    arguments = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="accel-node-"))
    layouts = {"built-in": [False], "processes": [True], "both": [True, False]}
    try:
        results = []
        trees = []
        if arguments.only in (None, "example"):
            trees.append(("example GPU server", EXAMPLE_TREE))
        if arguments.only in (None, "big"):
            build_from_description(BIG_NODE, workdir / "big-tree")
            trees.append(("big node", workdir / "big-tree"))
        for name, tree in trees:
            for processes in layouts[arguments.layout]:
                where = workdir / f"{name.replace(' ', '-')}-{processes}"
                results.append(
                    measure(
                        name, tree, where, arguments.quiet_seconds, processes, arguments.uevents
                    )
                )
        print("\n".join(rows(results, arguments.quiet_seconds)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
