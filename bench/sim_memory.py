"""Where a simulated node's memory goes: ``python -m bench.sim_memory --nodes 200``.

Runs a conductor on SQLite (a process of its own) and a simulated fleet in this
process (``Fleet``, as ``accel sim`` runs it), waits until the fleet has converged,
then writes what this process holds: its resident memory, the Python objects it
tracks by type, its open descriptors, and with ``--trace`` the allocations still
live, grouped by the line that made them (tracemalloc, ``--depth`` frames). Run it
at two sizes and subtract: what grows with the nodes, over the nodes added, is the
memory of one node (docs/benchmarks.md, issue 25, "The simulator's memory per node").
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from accel.cli import fleet_daemons
from accel.cli.argv import accel_argv
from accel.db.engine import make_engine, migrate
from accel.sim.fleet import Fleet, SimSettings
from accel.sockets import raise_file_limit
from bench.daemons import answers, free_port, spawn, stop
from bench.fleet import _present
from bench.procfs import rss_mib
from tests.processes import TOKEN, wait_until

CONVERGENCE_LIMIT = 600.0


def _descriptors() -> collections.Counter[str]:
    kinds: collections.Counter[str] = collections.Counter()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        kinds[target.split(":")[0] if ":" in target else "file"] += 1
    return kinds


def _objects() -> collections.Counter[str]:
    gc.unfreeze()  # frozen objects are out of gc.get_objects() too
    counts = collections.Counter(
        f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()
    )
    gc.freeze()
    return counts


def _allocations(snapshot: tracemalloc.Snapshot, depth: int, top: int) -> list[dict[str, Any]]:
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    rows = []
    for stat in snapshot.statistics("traceback")[:top]:
        frames = [f"{f.filename.split('site-packages/')[-1]}:{f.lineno}" for f in stat.traceback]
        rows.append({"kib": stat.size / 1024, "count": stat.count, "where": frames[-depth:]})
    by_line = []
    for stat in snapshot.statistics("lineno")[:top]:
        frame = stat.traceback[0]
        by_line.append(
            {
                "kib": stat.size / 1024,
                "count": stat.count,
                "where": f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}",
            }
        )
    by_owner: collections.Counter[str] = collections.Counter()
    for trace in snapshot.traces:
        by_owner[_owner(trace.traceback)] += trace.size
    owners = [{"kib": size / 1024, "where": where} for where, size in by_owner.most_common(top)]
    return [{"by_traceback": rows, "by_line": by_line, "by_accel_line": owners}]


def _owner(traceback: tracemalloc.Traceback) -> str:
    """The innermost line of accel's own code that made an allocation (the library's
    file when none is in the traceback)."""
    for frame in reversed(traceback):  # innermost first
        if "/src/accel/" in frame.filename:
            return f"{frame.filename.split('/src/')[-1]}:{frame.lineno}"
    return traceback[-1].filename.split("site-packages/")[-1]


async def _measure(
    settings: SimSettings, engine_url: str, trace: bool, depth: int, top: int
) -> dict[str, Any]:
    engine = make_engine(engine_url)
    fleet = Fleet(settings)
    before = rss_mib(os.getpid())
    started = time.monotonic()
    await fleet.start()
    await fleet.wait_ready()
    up = rss_mib(os.getpid())
    await fleet.release(1000)
    devices = sum(plan.total for plan in fleet.plans)
    deadline = time.monotonic() + CONVERGENCE_LIMIT
    while await asyncio.to_thread(_present, engine) < devices:
        if time.monotonic() > deadline:
            raise RuntimeError("the fleet did not converge")
        await asyncio.sleep(0.5)
    converged = time.monotonic() - started
    await asyncio.sleep(5)  # the syncs' answers read and let go
    result: dict[str, Any] = {
        "nodes": settings.nodes,
        "drivers": sum(len(node.drivers) for node in fleet.nodes),
        "devices": devices,
        "start_to_converged_s": round(converged, 1),
        "rss_mib": {"before": before, "up": up, "converged": rss_mib(os.getpid())},
        "descriptors": dict(_descriptors()),
        "tasks": len(asyncio.all_tasks()),
        "objects": dict(_objects().most_common(80)),
    }
    if trace:
        result["allocations"] = _allocations(tracemalloc.take_snapshot(), depth, top)
        result["traced_mib"] = tracemalloc.get_traced_memory()[0] / 2**20
    # What a full collection would free: cycles left for it (the sim collects rarely).
    gc.unfreeze()
    result["garbage_objects"] = gc.collect()
    gc.freeze()
    if trace:
        result["traced_after_collect_mib"] = tracemalloc.get_traced_memory()[0] / 2**20
    await fleet.stop()
    engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--trace", action="store_true", help="tracemalloc the fleet")
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None, help="JSON here, else stdout")
    args = parser.parse_args()
    raise_file_limit()
    if args.trace:
        tracemalloc.start(args.depth)
    with tempfile.TemporaryDirectory(prefix="sim-memory-") as scratch:
        workdir = Path(scratch)
        database = f"sqlite:///{workdir / 'accel.db'}"
        migrate(make_engine(database))
        port = free_port()
        conductor = spawn(
            accel_argv(
                fleet_daemons.conductor,
                listen=f"127.0.0.1:{port}",
                database=database,
                log_level="warning",
                hello_rate=100000,
                hello_burst=100000,
                max_concurrent_syncs=256,
                heartbeat_interval=30.0,
            ),
            workdir / "conductor.log",
        )
        try:
            wait_until(lambda: answers(f"http://127.0.0.1:{port}/"), "the conductor")
            settings = SimSettings(
                conductors=(f"http://127.0.0.1:{port}",),
                nodes=args.nodes,
                devices_per_node=8,
                token=TOKEN,
                tree_dir=workdir / "trees",
                heartbeat_interval=30.0,
                hello_interval=60.0,
            )
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                result = runner.run(_measure(settings, database, args.trace, args.depth, args.top))
        finally:
            stop(conductor)
    text = json.dumps(result, indent=1)
    if args.out is None:
        sys.stdout.write(text + "\n")
    else:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
