"""A light node: the agent serving built-in drivers in its own process, beside a driver
run as a process of its own, as separate processes over HTTP on loopback.

One node for the module: an agent with the GPU, FPGA, QAT and AICHIP drivers built in
(``accel agent --drivers``) and a NIC driver process, reporting to a conductor. Both
processes print every module they import (``PYTHONPROFILEIMPORTTIME``), so the test of
what a node loads reads what really ran, discoveries included.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from accel.driver.fake_sysfs import FakeSysfs, build_gpu_server
from tests.integration.fleet import FAST_DRIVER
from tests.processes import Cluster, Service, agent_drivers, internal_client, wait_until

BUILT_IN = ("GPU", "FPGA", "QAT", "AICHIP")
IMPORTS = {"PYTHONPROFILEIMPORTTIME": "1"}
# The fleet's libraries: the database, its migrations, and what only the api, the
# conductor and the operator's commands use. A node's daemons load none of them.
FLEET_LIBRARIES = {"sqlalchemy", "alembic", "psycopg", "psycopg_binary", "httpx", "rich"}
# Every library outside the standard one that a node's daemons load. A new one here
# is a node's memory and start-up time: add it knowingly.
NODE_LIBRARIES = {
    "accel",
    "aiohappyeyeballs",
    "aiohttp",
    "aiosignal",
    "annotated_types",
    "anyio",
    "attr",
    "attrs",
    "cachetools",
    "click",
    "frozenlist",
    "h11",
    "httptools",
    "idna",
    # inotify on a fake tree (accel.driver.tree_watch), in the "node" extra.
    "inotify_simple",
    "multidict",
    "prometheus_client",
    "propcache",
    "pydantic",
    "pydantic_core",
    "sniffio",
    "starlette",
    "tenacity",
    "typing_extensions",
    "typing_inspection",
    "uvicorn",
    "uvloop",
    # uvicorn imports it where it is installed (uvicorn[standard], the fleet's extra).
    "watchfiles",
    "yarl",
}


@dataclass
class Node:
    cluster: Cluster
    tree: FakeSysfs
    agent: Service
    nic: Service


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    workdir = tmp_path_factory.mktemp("light-node")
    tree = build_gpu_server(workdir / "tree")
    cluster = Cluster(workdir, env=IMPORTS)
    try:
        conductor = cluster.conductor(
            f"sqlite:///{workdir / 'accel.db'}", heartbeat_interval=0.5, resync_interval=0.5
        )
        agent = cluster.agent(
            [conductor.url],
            "node1",
            heartbeat_interval=0.5,
            driver_timeout=1,
            drivers=",".join(BUILT_IN),
            sysfs_root=tree.root,
        )
        nic = cluster.driver("NIC", agent, tree.root, **FAST_DRIVER)
        wait_until(
            lambda: outcomes(agent) == dict.fromkeys((*BUILT_IN, "NIC"), "ok"),
            "every driver to report",
            timeout=120,  # six processes starting on a shared, loaded machine
            on_timeout=cluster.logs,
        )
        yield Node(cluster, tree, agent, nic)
    finally:
        cluster.stop_all()


def report(agent: Service) -> dict[str, Any]:
    with internal_client() as client:
        answer: dict[str, Any] = client.get(agent.url + "/v1/hardware").json()
    return answer


def outcomes(agent: Service) -> dict[str, str]:
    return {d["type"]: d["state"] for d in report(agent)["drivers"]}


def discovered(agent: Service) -> dict[str, str]:
    """The drivers' outcomes of a discovery started now, as a conductor starts one."""
    with internal_client() as client:
        generation = client.post(agent.url + "/v1/discovery").json()["generation"]
        answer = client.get(
            agent.url + "/v1/hardware", params={"min_generation": generation, "wait": 5}
        ).json()
    return {d["type"]: d["state"] for d in answer["drivers"]}


def imported_libraries(log: Path) -> set[str]:
    """The top-level packages outside the standard library that a process imported,
    read from its ``-X importtime`` lines. Those lines also name the imports that
    failed (a library's optional ones): a name not installed here was not loaded."""
    names = set()
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return {
        name
        for name in names
        if name
        and not name.startswith("_")
        and name not in sys.stdlib_module_names
        and importlib.util.find_spec(name) is not None
    }


def test_a_node_loads_only_a_nodes_libraries(node: Node) -> None:
    for service in (node.agent, node.nic):
        loaded = imported_libraries(service.log_path)
        assert "accel" in loaded, service.log()  # the log holds the import lines
        assert loaded & FLEET_LIBRARIES == set(), service.name
        assert loaded - NODE_LIBRARIES == set(), service.name


def test_the_built_in_drivers_are_the_agents_own_and_a_driver_process_joins_them(
    node: Node,
) -> None:
    with internal_client() as client:
        drivers = client.get(node.agent.url + "/v1/drivers").json()["drivers"]
        roots = {d["type"]: client.get(f"http://{d['endpoint']}/").json() for d in drivers}
    endpoints = {d["type"]: d["endpoint"] for d in drivers}
    assert sorted(endpoints) == sorted((*BUILT_IN, "NIC"))
    assert len(set(endpoints.values()) | {node.agent.endpoint}) == len(endpoints) + 1
    assert {kind: root["kind"] for kind, root in roots.items()} == {k: k for k in endpoints}
    assert node.nic.url.endswith(endpoints["NIC"])
    # Only the agent and the NIC driver run: the built-in drivers are the agent's threads
    # and sockets, not processes.
    children = [
        p
        for p in os.listdir("/proc")
        if p.isdigit() and _parent(int(p)) in (node.agent.process.pid, node.nic.process.pid)
    ]
    assert children == []
    hardware = report(node.agent)["hardware"]
    assert {h["acc_specs"]["device_type"] for h in hardware} == {*BUILT_IN, "NIC"}


def test_one_watch_of_the_tree_per_process_and_a_change_is_reported(node: Node) -> None:
    # The agent's four built-in drivers share one inotify watch of the tree; the NIC
    # driver's process, alone in it, has its own.
    assert _inotify_instances(node.agent.process.pid) == 1
    assert _inotify_instances(node.nic.process.pid) == 1
    services = node.tree.device_dir("0000:6b:00.0") / "qat/cfg_services"
    services.write_text("asym\n")
    try:
        wait_until(
            lambda: _qat_services(node.agent).get("0000:6b:00.0") == ["asym"],
            "the agent to report the QAT's new services",
            on_timeout=node.cluster.logs,
        )
    finally:
        services.write_text("sym;dc\n")
    wait_until(
        lambda: _qat_services(node.agent).get("0000:6b:00.0") == ["sym", "dc"],
        "the agent to report the QAT's services as they were",
        on_timeout=node.cluster.logs,
    )


def _inotify_instances(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify"
        except OSError:
            continue
    return count


def _qat_services(agent: Service) -> dict[str, Any]:
    return {
        h["pci"]["address"]: h["acc_specs"]["acc_capability"].get("services")
        for h in report(agent)["hardware"]
        if h["acc_specs"]["device_type"] == "QAT"
    }


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def test_a_hung_built_in_driver_and_a_killed_driver_process_leave_the_others_reporting(
    node: Node,
) -> None:
    # A read that blocks for good: the GPU's numa_node becomes a FIFO nobody writes.
    # Only the GPU driver reads a GPU's attributes; its scan's thread hangs in open().
    gpu = node.tree.device_dir("0000:17:00.0")
    (gpu / "numa_node").unlink()
    os.mkfifo(gpu / "numa_node")
    node.nic.kill()  # kill -9

    expected = {"GPU": "failed", "NIC": "failed", "FPGA": "ok", "QAT": "ok", "AICHIP": "ok"}
    wait_until(
        lambda: outcomes(node.agent) == expected,
        "the agent to report the hung and the killed driver failed, the others ok",
        on_timeout=node.cluster.logs,
    )
    # The agent and its other drivers keep answering: each new discovery reports them.
    first = report(node.agent)["generation"]
    wait_until(
        lambda: report(node.agent)["generation"] > first and outcomes(node.agent) == expected,
        "another discovery with the same outcomes",
        on_timeout=node.cluster.logs,
    )
    assert node.agent.alive()
    kinds = {h["acc_specs"]["device_type"] for h in report(node.agent)["hardware"]}
    assert kinds == {"FPGA", "QAT", "AICHIP"}

    # The hang ends (a writer comes): the GPU driver reports again, in the same process.
    writer = os.open(gpu / "numa_node", os.O_WRONLY | os.O_NONBLOCK)  # the scan reads it
    os.write(writer, b"0\n")
    os.close(writer)
    (gpu / "numa_node").unlink()
    (gpu / "numa_node").write_text("0\n")
    wait_until(
        lambda: outcomes(node.agent).get("GPU") == "ok",
        "the GPU driver to report again",
        on_timeout=node.cluster.logs,
    )
    assert node.agent.alive()


def test_a_built_in_driver_that_hangs_from_the_start_keeps_neither_the_others_nor_the_stop(
    cluster: Cluster, gpu_server: FakeSysfs
) -> None:
    gpu = gpu_server.device_dir("0000:17:00.0")
    (gpu / "numa_node").unlink()
    os.mkfifo(gpu / "numa_node")  # the GPU driver's first scan never ends
    agent = cluster.agent(
        ["http://127.0.0.1:9"],  # no conductor: its heartbeats fail, its discoveries run
        "node2",
        heartbeat_interval=0.5,
        driver_timeout=1,
        drivers="GPU,QAT",
        sysfs_root=gpu_server.root,
    )
    # Nobody asks for a discovery (no conductor answers): the agent runs one when a
    # driver registers, so its answer is complete without a conductor's sync.
    wait_until(
        lambda: outcomes(agent) == {"QAT": "ok"},
        "the QAT driver to report while the GPU driver's first scan hangs",
        on_timeout=cluster.logs,
    )
    assert discovered(agent) == {"QAT": "ok"}
    assert [d["type"] for d in agent_drivers(agent)] == ["QAT"]
    # SIGTERM: it drains and exits by itself (stop() kills what is left after 15 s).
    assert agent.stop() == 0, cluster.logs()
