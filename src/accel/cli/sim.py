"""``accel sim``: a simulated fleet in one process, for tests, demos and benchmarks.

Each node is the production agent and drivers on their own loopback ports, their
hardware read from generated fake trees. It serves until SIGINT or SIGTERM; SIGUSR1
changes a share of the hardware (``--change-share``), which the conductor's next
resync picks up.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from accel.cli.options import (
    driver_timeout_option,
    heartbeat_interval_option,
    hello_interval_option,
    internal_token,
    option,
)

if TYPE_CHECKING:
    from accel.sim.fleet import Fleet

log = logging.getLogger(__name__)


@click.command()
@option(
    "--conductor",
    required=True,
    metavar="URL[,URL...]",
    help="Conductors in order of preference; every agent fails over between them.",
)
@option("--nodes", type=click.IntRange(1, 20_000), required=True, help="How many nodes.")
@option("--devices-per-node", type=click.IntRange(1, 250), default=8)
@option("--seed", type=int, default=0, help="Picks each node's kinds; same seed, same fleet.")
@option("--name-prefix", default="sim", help="Node names are PREFIX00000, PREFIX00001, ...")
@option(
    "--tree-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the fake sysfs templates go [default: a temporary folder].",
)
@option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write every node's endpoint and hardware uuids here (JSON) once all are up.",
)
@heartbeat_interval_option
@hello_interval_option
@driver_timeout_option
@option(
    "--release-rate",
    type=click.FloatRange(0.0),
    default=200.0,
    help="Nodes a second that start saying hello once all are up (0: all at once).",
)
@option(
    "--release-on-signal",
    is_flag=True,
    help="Once all are up, wait for SIGUSR2 before saying hello (to start several "
    "simulators' fleets together).",
)
@option(
    "--change-share",
    type=click.FloatRange(0.0, 1.0),
    default=0.01,
    help="Share of the hardware that SIGUSR1 changes.",
)
@option(
    "--internal-token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="File holding the deployment's internal token (else ACCEL_INTERNAL_TOKEN).",
)
@option("--log-level", default="warning", type=click.Choice(["debug", "info", "warning", "error"]))
def sim(
    conductor: str,
    nodes: int,
    devices_per_node: int,
    seed: int,
    name_prefix: str,
    tree_dir: Path | None,
    manifest: Path | None,
    heartbeat_interval: float,
    hello_interval: float,
    driver_timeout: float,
    release_rate: float,
    release_on_signal: bool,
    change_share: float,
    internal_token_file: Path | None,
    log_level: str,
) -> None:
    """Simulate NODES nodes (agents and drivers) reporting to a conductor."""
    from accel.serving import configure_logging
    from accel.sim.fleet import Fleet, SimSettings
    from accel.sockets import raise_file_limit

    configure_logging("sim", log_level)
    conductors = tuple(part.strip() for part in conductor.split(",") if part.strip())
    if not conductors:
        raise click.BadParameter("name at least one conductor", param_hint="--conductor")
    token = internal_token(internal_token_file)
    raise_file_limit()
    with tempfile.TemporaryDirectory(prefix="accel-sim-") as scratch:
        settings = SimSettings(
            conductors=conductors,
            nodes=nodes,
            devices_per_node=devices_per_node,
            token=token,
            tree_dir=tree_dir or Path(scratch),
            seed=seed,
            prefix=name_prefix,
            heartbeat_interval=heartbeat_interval,
            hello_interval=hello_interval,
            driver_timeout=driver_timeout,
        )
        _run(_serve(Fleet(settings), manifest, change_share, release_rate, release_on_signal))


async def _serve(
    fleet: Fleet,
    manifest: Path | None,
    change_share: float,
    release_rate: float,
    release_on_signal: bool = False,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    go = asyncio.Event()
    changes = 0

    def change() -> None:
        nonlocal changes
        changes += 1
        changed = fleet.change_hardware(change_share, seed=changes)
        log.warning("changed hardware on %d nodes", len(changed))

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, change)
    loop.add_signal_handler(signal.SIGUSR2, go.set)
    started = time.monotonic()
    try:
        await fleet.start()
        await fleet.wait_ready()
        if manifest is not None:
            fleet.write_manifest(manifest)  # written first: it announces the release
        if release_on_signal:
            await go.wait()
        await fleet.release(release_rate)
        total = sum(plan.total for plan in fleet.plans)
        print(
            f"sim: {len(fleet.nodes)} nodes, {total} devices, up in "
            f"{time.monotonic() - started:.1f}s",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
    finally:
        await fleet.stop()


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings it; plain asyncio works too
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
