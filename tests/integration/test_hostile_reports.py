"""Reports that would stall or corrupt the inventory: oversize, overlong, clashing.

Real processes over loopback. A hostile driver (tests/hostile_driver.py) makes up
its report; the agent must refuse it as a failed driver, saying which and why, and
the conductor must keep that driver's hardware as stored, while other nodes go on.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from accel.cli.argv import Setting
from accel.driver.discovery import discover
from accel.driver.fake_sysfs import FakeFunction, FakeSysfs, build_gpu_server
from accel.internal.schemas import MAX_DRIVER_ANSWER_BYTES, MAX_ENTRIES_PER_DRIVER, Kind
from accel.states import AgentState, AlarmKind
from accel.web.json_bodies import loads
from tests.integration.fleet import FAST_AGENT, FAST_DRIVER, agents, alarms, devices, get
from tests.processes import (
    TOKEN,
    Cluster,
    Service,
    agent_drivers,
    internal_client,
    wait_until,
)

ROOT = Path(__file__).parents[2]
CONDUCTOR: dict[str, Setting] = {
    "heartbeat_interval": 0.5,
    "resync_interval": 1,
    "discovery_timeout": 20,
    "agent_down_after": 10,
    "sync_retry_after": 0.5,
}


def hostile_driver(cluster: Cluster, agent: Service, *flags: str) -> Service:
    """A lying GPU driver, registered with ``agent`` in place of the real one."""
    before = {d["endpoint"] for d in agent_drivers(agent) if d["type"] == "GPU"}
    log_path = cluster.workdir / f"hostile-{len(cluster.services)}.log"
    argv = [sys.executable, "-m", "tests.hostile_driver", "--agent", agent.url, *flags]
    with open(log_path, "ab") as output:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ACCEL_INTERNAL_TOKEN": TOKEN},
        )
    service = Service("hostile-driver", argv, log_path, "", process)
    cluster.services.append(service)

    def registered() -> str | None:
        if not service.alive():
            raise AssertionError(f"the hostile driver exited\n{service.log()}")
        return next(
            (
                d["endpoint"]
                for d in agent_drivers(agent)
                if d["type"] == "GPU" and d["endpoint"] not in before
            ),
            None,
        )

    service.url = "http://" + wait_until(registered, "the hostile driver to register")
    return service


def gpu_outcome(agent: Service) -> dict[str, Any] | None:
    with internal_client() as client:
        report = client.get(agent.url + "/v1/hardware").json()
    return next((d for d in report.get("drivers", []) if d["type"] == "GPU"), None)


def failed_with(agent: Service, driver: Service, words: str) -> dict[str, Any] | None:
    outcome = gpu_outcome(agent)
    if outcome is None or outcome["endpoint"] != driver.endpoint:
        return None
    return outcome if outcome["state"] == "failed" and words in outcome["error"] else None


def moved_on(api: Service, node1: dict[str, Any], node2: dict[str, Any]) -> bool:
    now = agents(api)
    synced = now["node1"]["last_synced_at"] > node1["last_synced_at"]
    return bool(synced and now["node2"]["last_seen"] > node2["last_seen"])


def test_an_oversize_driver_is_refused_as_failed_and_no_other_node_stalls(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs, tmp_path: Path
) -> None:
    conductor = cluster.conductor(sqlite_url, **CONDUCTOR)
    api = cluster.api(sqlite_url)
    node1 = cluster.agent([conductor.url], "node1", **{**FAST_AGENT, "driver_timeout": 10})
    gpu = cluster.driver("GPU", node1, gpu_server.root, **FAST_DRIVER)
    cluster.driver("QAT", node1, gpu_server.root, **FAST_DRIVER)
    node2 = cluster.agent([conductor.url], "node2", **FAST_AGENT)
    cluster.driver("GPU", node2, build_gpu_server(tmp_path / "node2").root, **FAST_DRIVER)
    before = wait_until(
        lambda: (found := devices(api)) and len(found) == 10 and found, "10 devices"
    )
    cluster.discard(gpu)

    cases = [
        # 100,000 entries, 35 MB: over the bytes a driver's answer may hold.
        (("--entries", "100000", "--name-length", "150"), f"{MAX_DRIVER_ANSWER_BYTES} bytes"),
        # Small, but more entries than a driver may report.
        (("--entries", str(MAX_ENTRIES_PER_DRIVER + 1)), f"the {MAX_ENTRIES_PER_DRIVER}"),
        # One entry with a 500,000-character product name.
        (("--entries", "1", "--name-length", "500000"), "product_name"),
        # One small entry whose one number would make 10**9 attach handles.
        (("--entries", "1", "--mdev-instances", str(10**9)), "instances"),
        # A capability nested 60 levels deep: stored, it would make every answer that
        # carries it unreadable to accel's own bounded parser (`accel hardware list`).
        (("--entries", "1", "--capability-depth", "60"), "acc_capability"),
    ]
    for flags, words in cases:
        liar = hostile_driver(cluster, node1, *flags)
        wait_until(
            functools.partial(failed_with, node1, liar, words),
            f"the agent to fail the lying driver ({words})",
            on_timeout=cluster.logs,
        )
        # The conductor syncs node1 with the failed driver after this (nothing vanishes)
        # and goes on hearing node2.
        listed = agents(api)
        wait_until(
            functools.partial(moved_on, api, listed["node1"], listed["node2"]),
            "a sync of node1 and a heartbeat of node2",
        )
        assert devices(api) == before
        cluster.discard(liar)
    assert alarms(api, "all") == []
    assert {a["state"] for a in agents(api).values()} == {AgentState.UP}
    stored = json.dumps(get(api, "/v2/hardware", state="all"))
    assert "ppppppppppppppppppppppppppppppp" not in stored
    # What an operator's command reads back through accel's bounded parser.
    loads(httpx.get(api.url + "/v2/hardware", params={"state": "all"}, timeout=10.0).content)


def test_a_node_reporting_another_nodes_uuids_loses_only_those_entries(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs, tmp_path: Path
) -> None:
    conductor = cluster.conductor(sqlite_url, **CONDUCTOR)
    api = cluster.api(sqlite_url)
    node1 = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    cluster.driver("GPU", node1, gpu_server.root, **FAST_DRIVER)
    held = {str(e.uuid) for e in discover(Kind.GPU, gpu_server.root, "node1")}
    wait_until(lambda: len(devices(api)) == 4, "node1's GPUs")

    # node2's driver is told it runs on node1: its tree's GPUs get node1's uuids,
    # except the one GPU node1 does not have.
    copied = build_gpu_server(tmp_path / "copy")
    copied.add(FakeFunction("0000:e1:00.0", 0x10DE, 0x2331, 0x030200, driver="nvidia"))
    own = {str(e.uuid) for e in discover(Kind.GPU, copied.root, "node1")} - held
    node2 = cluster.agent([conductor.url], "node2", **FAST_AGENT)
    cluster.driver("GPU", node2, copied.root, **FAST_DRIVER, node="node1")

    def clash_seen() -> bool:
        raised = {subject for kind, subject in alarms(api) if kind == AlarmKind.HARDWARE_UUID_CLASH}
        return raised == held

    wait_until(clash_seen, "a clash alarm for each of node1's uuids", on_timeout=cluster.logs)
    by_uuid = {d["uuid"]: d["node"] for d in get(api, "/v2/hardware")["hardware"]}
    assert {u for u, host in by_uuid.items() if host == "node1"} == held
    assert {u for u, host in by_uuid.items() if host == "node2"} == own
    listed = agents(api)
    assert listed["node2"]["last_sync_error"] is None
    shown = json.dumps(listed).upper()
    assert not any(word in shown for word in ("SQL", "INSERT", "UNIQUE", "PARAMETERS"))


def test_text_no_database_can_store_is_refused_as_a_failed_driver(
    cluster: Cluster, database_url: str, gpu_server: FakeSysfs
) -> None:
    """A NUL inside a report's text: PostgreSQL refused the whole node's report at every
    sync, for ever; SQLite stored it. The agent fails that driver, and says why."""
    conductor = cluster.conductor(database_url, **CONDUCTOR)
    api = cluster.api(database_url)
    node1 = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    cluster.driver("QAT", node1, gpu_server.root, **FAST_DRIVER)
    wait_until(lambda: len(devices(api)) == 2, "node1's QAT functions")
    liar = hostile_driver(cluster, node1, "--entries", "2", "--vendor-id", "10\\0de")
    wait_until(
        functools.partial(failed_with, node1, liar, "NUL"),
        "the agent to fail the driver whose text holds a NUL",
        on_timeout=cluster.logs,
    )
    synced = agents(api)["node1"]["last_synced_at"]
    wait_until(
        lambda: agents(api)["node1"]["last_synced_at"] > synced,
        "a sync of node1 with the failed driver",
    )
    assert len(devices(api)) == 2 and agents(api)["node1"]["last_sync_error"] is None


def test_a_report_naming_one_pci_function_twice_keeps_the_stored_inventory(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, **CONDUCTOR)
    api = cluster.api(sqlite_url)
    node1 = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    gpu = cluster.driver("GPU", node1, gpu_server.root, **FAST_DRIVER)
    before = wait_until(lambda: (found := devices(api)) and len(found) == 4 and found, "4 GPUs")
    cluster.discard(gpu)
    hostile_driver(cluster, node1, "--entries", "2", "--same-address")
    wait_until(
        lambda: "0000:17:00.0 twice" in (agents(api)["node1"]["last_sync_error"] or ""),
        "the conductor to refuse the report, naming the function",
        on_timeout=cluster.logs,
    )
    assert devices(api) == before
