"""A setup operation whose conductor froze longer than the takeover time.

A conductor whose record stops vouching for it (accel.db.conductor_liveness: a few
of its heartbeats after its last) has its unfinished setup operations taken over
by a live one (accel.conductor.operations.unfinished). A frozen conductor
(SIGSTOP, a suspended virtual machine) is not dead: it resumes later with what it
knew. The operation must still run once on the node: the conductor that took it
over finishes it, and the one that resumes neither sends it again nor rewrites it,
even once the driver has forgotten it (restarted) and would run it anew if asked.
"""

from __future__ import annotations

import datetime as dt
import functools
import signal
from pathlib import Path

from sqlalchemy import select

from accel.db.engine import make_engine
from accel.db.models import Conductor, Operation
from accel.driver.fake_sysfs import FakeSysfs
from accel.states import OperationState
from tests.integration.fleet import FAST_AGENT, hardware
from tests.integration.test_setup import (
    SLOW_RESYNC_CONDUCTOR,
    WAITING_TOOL,
    finished,
    fpga_driver_settings,
    setup,
)
from tests.processes import Cluster, wait_until

# Well past the frozen conductor's vouch (3 of its 0.5 s heartbeats), on a loaded machine.
TAKEOVER_DEADLINE = 60.0


def owner_and_last_seen(database: str, operation: str) -> tuple[str | None, dict[str, dt.datetime]]:
    engine = make_engine(database)
    try:
        with engine.connect() as connection:
            owner = connection.scalar(
                select(Operation.conductor).where(Operation.uuid == operation)
            )
            seen = dict(connection.execute(select(Conductor.name, Conductor.last_seen)).all())
    finally:
        engine.dispose()
    return owner, seen


def test_a_frozen_conductors_operation_is_taken_over_and_runs_once(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs, tmp_path: Path
) -> None:
    runs, release = tmp_path / "runs", tmp_path / "release"
    script = WAITING_TOOL.replace("RUNS", str(runs)).replace("RELEASE", str(release))
    settings = fpga_driver_settings(tmp_path, script, "nlb0.gbs")
    frozen = cluster.conductor(sqlite_url, **SLOW_RESYNC_CONDUCTOR, name="frozen")
    api = cluster.api(sqlite_url)
    agent = cluster.agent([frozen.url], "node1", **FAST_AGENT)
    driver = cluster.driver("FPGA", agent, gpu_server.root, **settings)
    [device] = wait_until(lambda: hardware(api) or None, "the FPGA in the API")
    answer = setup(api, device["uuid"], {"action": "program", "bitstream": "nlb0.gbs"})
    assert answer.status_code == 202, answer.text
    operation = answer.json()["operation"]["uuid"]

    def run_count() -> int:
        return len(runs.read_text().splitlines()) if runs.exists() else 0

    wait_until(lambda: run_count() == 1, "the tool to start")
    cluster.conductor(sqlite_url, **SLOW_RESYNC_CONDUCTOR, name="live")
    assert owner_and_last_seen(sqlite_url, operation)[0] == "frozen"

    frozen.process.send_signal(signal.SIGSTOP)
    try:
        wait_until(
            lambda: owner_and_last_seen(sqlite_url, operation)[0] == "live",
            "the live conductor to take the operation over",
            timeout=TAKEOVER_DEADLINE,
            on_timeout=cluster.logs,
        )
        release.touch()
        done = finished(api, operation)
        assert done["state"] == OperationState.DONE, done
        # The driver restarts and forgets the operation: asked again, it would run it.
        driver.kill()
        release.unlink()
        cluster.driver("FPGA", agent, gpu_server.root, **settings)
    finally:
        frozen.process.send_signal(signal.SIGCONT)

    # The frozen conductor runs again: it records itself twice (so its loops have
    # turned), and by then it has acted on whatever it held from before the freeze.
    def reported_after(seen: dt.datetime) -> dt.datetime | None:
        now = owner_and_last_seen(sqlite_url, operation)[1]["frozen"]
        return now if now != seen else None

    seen = owner_and_last_seen(sqlite_url, operation)[1]["frozen"]
    for _ in range(2):
        seen = wait_until(
            functools.partial(reported_after, seen),
            "the frozen conductor to report in again",
            on_timeout=cluster.logs,
        )
    assert run_count() == 1, runs.read_text()
    assert finished(api, operation)["state"] == OperationState.DONE
    assert owner_and_last_seen(sqlite_url, operation)[0] == "live"
