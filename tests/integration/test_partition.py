"""A node cut off from its conductor by a real network partition, and healed.

The node (its agent and a GPU driver) runs in a network namespace of its own, joined
to the test's namespace by a veth pair; the conductor listens on the host end. The
test cuts the link (the host end goes down), so the agent's hellos and the
conductor's syncs fail as on a real network, then brings it back. The namespace and
the veth pair are the test's own, created here and removed at the end; where the
machine does not allow them (not root, no iproute2, no CAP_NET_ADMIN) the test skips
and says why.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from accel.cli import fleet_daemons, node_daemons
from accel.cli.argv import Setting, accel_argv
from accel.driver.fake_sysfs import build_gpu_server
from accel.internal.schemas import Kind
from accel.states import AgentState, AlarmKind, AlarmState
from tests.integration.fleet import FAST_AGENT, FAST_DRIVER, agents, alarms, hardware
from tests.integration.truth import Node, wait_for_truth
from tests.processes import TOKEN, Cluster, Service, agent_drivers, wait_until

CONDUCTOR: dict[str, Setting] = {
    "heartbeat_interval": 0.5,
    "agent_down_after": 2,
    "resync_interval": 1,
    "discovery_timeout": 2,
}
AGENT_PORT = 6671  # the namespace has its own ports: nothing else can hold this one


@dataclass
class Link:
    """A network namespace for the node, and the veth pair that joins it to the host."""

    namespace: str
    host_side: str
    host_address: str
    node_address: str

    def set(self, up: bool) -> None:
        _ip("link", "set", self.host_side, "up" if up else "down")

    def spawn(self, cluster: Cluster, name: str, daemon: list[str]) -> Service:
        """``daemon`` (accel.cli.argv) inside the namespace, stopped with the rest of the
        cluster."""
        log_path = cluster.workdir / f"{name}.log"
        argv = ["ip", "netns", "exec", self.namespace, *daemon]
        with open(log_path, "ab") as output:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, "ACCEL_INTERNAL_TOKEN": TOKEN},
            )
        service = Service(name, argv, log_path, "", process)
        cluster.services.append(service)
        return service


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def link() -> Iterator[Link]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network partition test: needs root and iproute2 (ip netns, veth)")
    tag = os.getpid() % 100_000
    subnet = f"10.213.{tag % 250}"
    made = Link(f"accel-part-{tag}", f"acch{tag}", f"{subnet}.1", f"{subnet}.2")
    try:
        _ip("netns", "add", made.namespace)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"network partition test: this machine refuses ip netns ({exc.stderr!r})")
    try:
        node_side = f"accn{tag}"
        _ip("link", "add", made.host_side, "type", "veth", "peer", "name", node_side)
        _ip("link", "set", node_side, "netns", made.namespace)
        _ip("addr", "add", f"{made.host_address}/30", "dev", made.host_side)
        _ip("link", "set", made.host_side, "up")
        inside = ("netns", "exec", made.namespace, "ip")
        _ip(*inside, "addr", "add", f"{made.node_address}/30", "dev", node_side)
        _ip(*inside, "link", "set", node_side, "up")
        _ip(*inside, "link", "set", "lo", "up")
        yield made
    finally:
        # Deleting the namespace deletes its veth end, and with it the host's end.
        subprocess.run(["ip", "netns", "del", made.namespace], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", made.host_side], capture_output=True, timeout=30)


def test_a_partitioned_node_goes_down_keeps_its_hardware_and_heals(
    cluster: Cluster, link: Link, sqlite_url: str, tmp_path: Path
) -> None:
    sock = socket.socket()
    sock.bind((link.host_address, 0))
    sock.listen(128)
    sock.set_inheritable(True)
    conductor = cluster._ready(
        cluster.spawn(
            "conductor",
            accel_argv(
                fleet_daemons.conductor,
                database=sqlite_url,
                listen_fd=sock.fileno(),
                **CONDUCTOR,
            ),
            sock,
            f"http://{link.host_address}:{sock.getsockname()[1]}",
        )
    )
    api = cluster.api(sqlite_url)
    node = Node("node1", build_gpu_server(tmp_path / "node1"), (Kind.GPU,))
    agent_url = f"http://{link.node_address}:{AGENT_PORT}"
    node.agent = link.spawn(
        cluster,
        "agent-node1",
        accel_argv(
            node_daemons.agent,
            conductor=conductor.url,
            name=node.name,
            listen=f"{link.node_address}:{AGENT_PORT}",
            **FAST_AGENT,
        ),
    )
    node.agent.url = agent_url
    node.drivers[Kind.GPU] = link.spawn(
        cluster,
        "driver-gpu",
        accel_argv(
            node_daemons.driver,
            kind="GPU",
            agent=agent_url,
            sysfs_root=node.tree.root,
            listen=f"{link.node_address}:0",  # the address its hellos to the agent come from
            **FAST_DRIVER,
        ),
    )
    agent = node.agent
    wait_until(lambda: agent_drivers(agent), "the driver to register", on_timeout=cluster.logs)
    wait_for_truth(api, [node], cluster)
    before = hardware(api)

    link.set(up=False)
    wait_until(
        lambda: agents(api)["node1"]["state"] == AgentState.DOWN,
        "node1 DOWN",
        on_timeout=cluster.logs,
    )
    assert alarms(api) == [(AlarmKind.AGENT_DOWN, "node1")]
    during = hardware(api)  # still the inventory, marked unreachable, nothing vanished
    assert sorted(e["uuid"] for e in during) == sorted(e["uuid"] for e in before)
    assert {e["reachable"] for e in during} == {False}
    assert hardware(api, "vanished") == []

    link.set(up=True)
    wait_for_truth(api, [node], cluster)  # UP again, alarm cleared, the same hardware
    assert {e["reachable"] for e in hardware(api)} == {True}
    assert alarms(api, AlarmState.CLEARED) == [(AlarmKind.AGENT_DOWN, "node1")]
