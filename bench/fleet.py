"""Fleet convergence with ``accel sim``: first hello to all hardware in the database,
then a resync of the whole fleet with 1% of the hardware changed.

The conductor starts first; then the simulator, whose agents hold their hellos until
every node is up (drivers registered, hardware discovered) and then greet the
conductor all at once.
Convergence is the time from the first agent row (the first hello, by the
conductor's clock) until the database holds every device. Then SIGUSR1 makes the
simulator change 1% of the hardware, and the next round in which every agent is
synced again is timed from its first sync to its last. With agents of internal
version 1.5 that round is one heartbeat interval: each hello carries the node's
hardware ETag, which either confirms the stored inventory (a sync without a call)
or has the changed node synced at once. The conductor's CPU is counted until every
agent is synced or one heartbeat interval from the round's first sync has passed,
whichever comes first, with how many agents were synced by then: a round that runs
past the interval (a node whose discovery ran late) would otherwise also count the
next round's first hellos, a thousand or more of them at 5,000 nodes, as many as
the simulators' timing happens to put there. That round runs unprofiled; a second
one, with py-spy attached, says where the conductor's time goes.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import Engine, func, select

from accel.cli import fleet_daemons
from accel.cli import sim as sim_command
from accel.cli.argv import Setting, accel_argv
from accel.db.engine import make_engine, migrate
from accel.db.models import Agent, Device
from accel.states import AgentState
from bench.daemons import answers, free_port, let_ports_go, spawn, stop
from bench.procfs import cpu_seconds, rss_mib
from bench.profile import Profile, py_spy
from tests.processes import TOKEN, wait_until

RESYNC_INTERVAL = 30.0
CONVERGENCE_LIMIT = 300.0
# Heartbeats every 30 s (a large fleet's setting): one process plays every node,
# and at 10 s the heartbeats alone would take much of its core at 1,000 nodes.
HEARTBEAT_SECONDS = 30.0
HEARTBEAT: dict[str, Setting] = {"heartbeat_interval": HEARTBEAT_SECONDS}
# Hellos released per second by the simulator, and syncs the conductor runs at once.
RELEASE_RATE = 1000
CONCURRENT_SYNCS = 256
# Nodes one simulator process plays (this machine allows 20,000 descriptors a process).
NODES_PER_SIM = 2000
# py-spy's samples a second while a fleet converges. At its default of 200 the two
# profilers took a share of a machine whose two cores the conductor, the simulators
# and PostgreSQL already fill: the time measured is the time with them, and 50
# costs them far less (docs/benchmarks.md).
CONVERGENCE_PROFILE_RATE = 50


@dataclass(frozen=True)
class FleetResult:
    backend: str
    nodes: int
    devices: int
    converged_s: float | None  # None: not within CONVERGENCE_LIMIT
    present: int
    resync_s: float
    changed: int
    conductor_cpu_s: float
    conductor_rss_mib: float
    sim_rss_mib: float
    conductor_profile: str
    sim_profile: str
    # CPU seconds each process spent from the release of the hellos to convergence.
    converge_cpu: tuple[float, float] = (0.0, 0.0)
    resync_profile: str = ""
    # What the conductor counted during the resync: hellos, and syncs that called an agent.
    resync_hellos: int = 0
    resync_calls: int = 0
    # Agents synced within the heartbeat interval the conductor's CPU was counted over.
    synced_in_interval: int = 0
    # The conductor's CPU in a second resync round, with py-spy attached.
    profiled_cpu_s: float | None = None  # None: no py-spy, no second round

    def rows(self) -> list[str]:
        what = f"{self.nodes} nodes x 8 devices ({self.devices}), {self.backend}"
        profiles = f"conductor: {self.conductor_profile}; sim: {self.sim_profile}"
        if self.converged_s is None:
            return [
                f"| fleet convergence, {what} | not within {CONVERGENCE_LIMIT:.0f} s: "
                f"{self.present} of {self.devices} devices | {profiles} |",
                f"| resident memory, {what} | conductor {self.conductor_rss_mib:.0f} MiB, "
                f"sim {self.sim_rss_mib:.0f} MiB | |",
            ]
        return [
            f"| fleet convergence, {what} | {self.converged_s:.1f} s (CPU meanwhile: "
            f"conductor {self.converge_cpu[0]:.1f} s, sim {self.converge_cpu[1]:.1f} s) "
            f"| {profiles} |",
            f"| resync of the whole fleet, {self.changed} devices changed (1%), {what} "
            f"| {self.resync_s:.1f} s; within {HEARTBEAT_SECONDS:.0f} s of its start "
            f"{self.synced_in_interval} of {self.nodes} agents synced, "
            f"conductor CPU {self.conductor_cpu_s:.2f} s "
            f"({self.resync_hellos} hellos, {self.resync_calls} syncs that called an agent); "
            f"{self._second_round()} |",
            f"| resident memory, {what} | conductor {self.conductor_rss_mib:.0f} MiB, "
            f"sim {self.sim_rss_mib:.0f} MiB | |",
        ]

    def _second_round(self) -> str:
        if self.profiled_cpu_s is None:
            return "no profile (py-spy is not installed) | "
        return (
            f"profiled in a second round: {self.profiled_cpu_s:.2f} s "
            f"| conductor, second round: {self.resync_profile}"
        )


def _present(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).where(Device.present.is_(True))) or 0


def _settled(engine: Engine) -> bool:
    with engine.connect() as connection:
        unsettled = connection.scalar(
            select(func.count()).where(
                Agent.state == AgentState.UP,
                Agent.inventory_etag.is_(None) | Agent.last_sync_error.is_not(None),
            )
        )
    return unsettled == 0


def _within(check: Callable[[], bool], limit: float) -> float | None:
    """Seconds until ``check`` holds, or None when it did not within ``limit``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > limit:
            return None
        time.sleep(0.1)
    return time.monotonic() - started


def bench_fleet(
    workdir: Path, backend: str, database: str, nodes: int, release_rate: float = RELEASE_RATE
) -> FleetResult:
    let_ports_go()
    port = free_port()
    log = workdir / f"fleet-{backend}-{nodes}.log"
    engine = make_engine(database)
    migrate(engine)
    conductor = spawn(
        accel_argv(
            fleet_daemons.conductor,
            listen=f"127.0.0.1:{port}",
            database=database,
            resync_interval=RESYNC_INTERVAL,
            log_level="warning",
            # Every simulated agent says hello from 127.0.0.1.
            hello_rate=100000,
            hello_burst=100000,
            max_concurrent_syncs=CONCURRENT_SYNCS,
            **HEARTBEAT,
        ),
        log,
    )
    sims: list[subprocess.Popen[bytes]] = []
    try:
        wait_until(
            lambda: answers(f"http://127.0.0.1:{port}/"), "the conductor", on_timeout=log.read_text
        )
        # One simulator process holds a few sockets per node: past NODES_PER_SIM the
        # fleet is split over several processes, each within the descriptor limit.
        shares = [NODES_PER_SIM] * (nodes // NODES_PER_SIM)
        if nodes % NODES_PER_SIM:
            shares.append(nodes % NODES_PER_SIM)
        manifests = [workdir / f"manifest-{backend}-{nodes}-{i}.json" for i in range(len(shares))]
        # Started one after another: several starting at once starve each other.
        for index, (share, manifest) in enumerate(zip(shares, manifests, strict=True)):
            sims.append(
                spawn(
                    accel_argv(
                        sim_command.sim,
                        conductor=f"http://127.0.0.1:{port}",
                        nodes=share,
                        name_prefix=f"sim{index}-",
                        seed=index + 1,
                        manifest=manifest,
                        tree_dir=workdir / f"trees-{index}",
                        **HEARTBEAT,
                        # The fleet as a whole says hello at release_rate a second.
                        hello_interval=60,
                        release_rate=release_rate / len(shares),
                        release_on_signal=True,
                    ),
                    log,
                )
            )
            wait_until(
                manifest.exists, "the simulator to be up", timeout=1800, on_timeout=log.read_text
            )
        devices = sum(
            len(uuids)
            for manifest in manifests
            for node in json.loads(manifest.read_text())["nodes"]
            for uuids in node["hardware"].values()
        )

        for sim in sims:  # every simulator's fleet says hello at once
            sim.send_signal(signal.SIGUSR2)

        def sims_cpu() -> float:
            return sum(cpu_seconds(sim.pid) for sim in sims)

        conductor_profile = Profile(conductor.pid, CONVERGENCE_PROFILE_RATE)
        sim_profile = Profile(sims[0].pid, CONVERGENCE_PROFILE_RATE)
        conductor_profile.start()
        sim_profile.start()
        cpu_at_release = (cpu_seconds(conductor.pid), sims_cpu())
        converged_in = _within(lambda: _present(engine) >= devices, CONVERGENCE_LIMIT)
        converge_cpu = (
            cpu_seconds(conductor.pid) - cpu_at_release[0],
            sims_cpu() - cpu_at_release[1],
        )
        conductor_profile.stop()
        sim_profile.stop()
        sims_rss = sum(rss_mib(sim.pid) for sim in sims)
        if converged_in is None:
            return FleetResult(
                backend,
                nodes,
                devices,
                None,
                _present(engine),
                0.0,
                0,
                0.0,
                rss_mib(conductor.pid),
                sims_rss,
                _summary(conductor_profile),
                _summary(sim_profile),
            )
        done = dt.datetime.now(dt.UTC)
        with engine.connect() as connection:
            first_hello = connection.scalar(select(func.min(Agent.created_at)))
        assert first_hello is not None
        converged = (done - first_hello).total_seconds()

        # The first resync is measured unprofiled: py-spy sampling 200 times a second
        # takes a share of this machine's two cores from the conductor and raises its
        # CPU for the round. The second is profiled, for where it goes.
        measured = _resync(engine, sims, conductor.pid, port, nodes, log, profiled=False)
        profiled = (
            _resync(engine, sims, conductor.pid, port, nodes, log, profiled=True)
            if py_spy() is not None
            else None
        )
        return FleetResult(
            backend,
            nodes,
            devices,
            converged,
            devices,
            measured.seconds,
            measured.changed,
            measured.cpu,
            rss_mib(conductor.pid),
            sum(rss_mib(sim.pid) for sim in sims),
            _summary(conductor_profile),
            _summary(sim_profile),
            converge_cpu,
            profiled.profile if profiled is not None else "",
            measured.hellos,
            measured.calls,
            measured.synced_in_interval,
            profiled.cpu if profiled is not None else None,
        )
    finally:
        engine.dispose()
        for sim in sims:
            stop(sim)
        stop(conductor)


@dataclass(frozen=True)
class _Resync:
    seconds: float  # from the round's first sync to its last
    changed: int  # devices the round rewrote
    cpu: float  # the conductor's, see the module's docstring
    hellos: int
    calls: int
    synced_in_interval: int
    profile: str


def _resync(
    engine: Engine,
    sims: list[subprocess.Popen[bytes]],
    conductor: int,
    port: int,
    nodes: int,
    log: Path,
    profiled: bool,
) -> _Resync:
    """Lets the fleet settle, changes 1% of its hardware, and measures the round in
    which every agent is synced again."""
    # Every agent's last report complete and stored with its ETag. At 5,000 nodes the
    # simulators' own agents time out on their drivers while the fleet comes up, and
    # those nodes' partial reports are retried for a while after convergence.
    wait_until(
        lambda: _settled(engine),
        "every agent's report complete",
        timeout=CONVERGENCE_LIMIT,
        on_timeout=log.read_text,
    )
    time.sleep(2)
    changed_at = dt.datetime.now(dt.UTC)
    for sim in sims:
        sim.send_signal(signal.SIGUSR1)

    def synced_since_change() -> int:
        with engine.connect() as connection:
            return (
                connection.scalar(select(func.count()).where(Agent.last_synced_at >= changed_at))
                or 0
            )

    # The CPU clock starts with the resync round, not with the quiet wait for it.
    wait_until(synced_since_change, "the resync to begin", timeout=RESYNC_INTERVAL * 10)
    cpu_before = cpu_seconds(conductor)
    counted_before = _counted(port)
    round_started = time.monotonic()
    profile = Profile(conductor)
    if profiled:
        profile.start()
    deadline = round_started + HEARTBEAT_SECONDS
    while synced_since_change() < nodes and time.monotonic() < deadline:
        time.sleep(0.1)
    cpu = cpu_seconds(conductor) - cpu_before
    profile.stop()
    counted_after = _counted(port)
    synced_in_interval = synced_since_change()
    wait_until(lambda: synced_since_change() == nodes, "the resync", timeout=RESYNC_INTERVAL * 10)
    hellos, calls = (counted_after[i] - counted_before[i] for i in (0, 1))
    with engine.connect() as connection:
        first, last = connection.execute(
            select(func.min(Agent.last_synced_at), func.max(Agent.last_synced_at)).where(
                Agent.last_synced_at >= changed_at
            )
        ).one()
        assert first is not None and last is not None
        changed = connection.scalar(select(func.count()).where(Device.updated_at > changed_at))
    return _Resync(
        (last - first).total_seconds(),
        changed or 0,
        cpu,
        int(hellos),
        int(calls),
        synced_in_interval,
        _summary(profile) if profiled else "",
    )


COUNTED = re.compile(
    r'^accel_(hellos_total\{component="conductor"|discoveries_total\{component="conductor",'
    r'outcome="(?:ok|unchanged|failed)")[^ ]* (\S+)$',
    re.M,
)


def _counted(port: int) -> tuple[float, float]:
    """The conductor's hellos so far, and its syncs that called an agent."""
    text = httpx.get(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    ).text
    return counted_in(text)


def counted_in(metrics: str) -> tuple[float, float]:
    """Hellos and agent-calling syncs in a conductor's ``/metrics`` text."""
    hellos = calls = 0.0
    for name, value in COUNTED.findall(metrics):
        if name.startswith("hellos"):
            hellos += float(value)
        else:
            calls += float(value)
    return hellos, calls


def _summary(profile: Profile) -> str:
    return f"own: {profile.top()}; accel's, inclusive: {profile.top_inclusive()}"
