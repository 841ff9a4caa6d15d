"""kill -9 of an agent serving its built-in drivers (``accel agent --drivers``, what
``accel up`` runs) in the middle of an ETag-keyed discovery, and during a change of
its hardware.

The agent asks each driver with the ETag of its last report, and the conductor asks
the agent with the ETag it stored (agent/discovery.py, conductor/syncing.py). The
moment is made, not drawn: a GPU attribute becomes a FIFO nobody writes, so every
discovery from then on asks the GPU driver with its ETag and waits on a scan that
never ends; the agent is killed then. While it is away the conductor calls it DOWN
and keeps every device (nothing vanishes, nothing is unbound, no request is left
half-bound); once it is back, the inventory is the tree's, the changes made while it
was away included: a new agent holds no ETag, so nothing stored by the dead one is
trusted.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from accel.driver.discovery import discover
from accel.driver.fake_sysfs import FakeFunction
from accel.internal.schemas import Kind
from accel.states import AgentState, AlarmKind, ArqState
from tests.integration.fleet import FAST_AGENT, agents, alarms, bind_ops, hardware
from tests.integration.test_allocation import arq, call, create_arqs, create_profile
from tests.integration.test_bind_faults import FINAL
from tests.integration.test_fleet_faults import FLEET_CONDUCTOR, new_gpu, pull_gpu
from tests.integration.truth import Node, make_nodes, wait_for_truth
from tests.processes import Cluster, Service, internal_client, wait_until

KINDS = (Kind.GPU, Kind.QAT)
HUNG_GPU = "0000:17:00.0"


class Stack:
    def __init__(self, cluster: Cluster, api: Service, node: Node) -> None:
        self.cluster, self.api, self.node = cluster, api, node

    def agent_report(self) -> dict[str, Any]:
        assert self.node.agent is not None
        return get_internal(self.node.agent, "/v1/hardware")


def get_internal(service: Service, path: str) -> dict[str, Any]:
    with internal_client() as client:
        found: dict[str, Any] = client.get(service.url + path).json()
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("kill-mid-discovery")
    cluster = Cluster(workdir)
    try:
        database = f"sqlite:///{workdir / 'accel.db'}"
        # DOWN soon after the kill (the rules under test), long after a driver's timeout.
        conductor = cluster.conductor(database, **{**FLEET_CONDUCTOR, "agent_down_after": 4})
        api = cluster.api(database)
        [node] = make_nodes(workdir, 1, KINDS)
        node.agent = cluster.agent(
            [conductor.url],
            node.name,
            **FAST_AGENT,
            drivers=",".join(kind.value for kind in KINDS),
            sysfs_root=node.tree.root,
        )
        wait_for_truth(api, [node], cluster)
        yield Stack(cluster, api, node)
    finally:
        cluster.stop_all()


def present(stack: Stack) -> set[str]:
    return {entry["uuid"] for entry in hardware(stack.api, "present")}


def vanished(stack: Stack) -> set[str]:
    return {entry["uuid"] for entry in hardware(stack.api, "vanished")}


def down_and_kept(stack: Stack, kept: set[str], gone: set[str]) -> None:
    """The agent is DOWN (alarmed), every device it had is still present, and no more
    vanished than ``gone``."""
    name = stack.node.name
    wait_until(
        lambda: agents(stack.api)[name]["state"] == AgentState.DOWN,
        "the killed agent to be DOWN",
        on_timeout=stack.cluster.logs,
    )
    assert (AlarmKind.AGENT_DOWN, name) in alarms(stack.api)
    assert present(stack) == kept
    assert vanished(stack) == gone


def restart(stack: Stack) -> None:
    assert stack.node.agent is not None
    stack.node.agent = stack.cluster.restart(stack.node.agent)


def bindable_vf(stack: Stack, address: str) -> str:
    found = call(stack.api, "GET", "/v2/deployables").json()["deployables"]
    [rp] = [d["rp_uuid"] for d in found if d["name"] == f"{stack.node.name}_{address}"]
    return str(rp)


def bind(stack: Stack, request: dict[str, Any], rp: str) -> None:
    ops = bind_ops(rp, str(uuid.uuid4()), hostname=stack.node.name)
    call(stack.api, "PATCH", "/v2/accelerator_requests", {request["uuid"]: ops})


def all_final(stack: Stack) -> bool:
    """Every request in a final state; true of none at all (under ``--dist worksteal``
    the second test may get a stack of its own, where no request was made)."""
    found: list[dict[str, Any]] = call(stack.api, "GET", "/v2/accelerator_requests").json()["arqs"]
    return all(a["state"] in FINAL for a in found)


def test_an_agent_killed_in_an_etag_keyed_discovery_comes_back_with_its_hardware(
    stack: Stack,
) -> None:
    node = stack.node
    assert node.agent is not None
    create_profile(
        stack.api, "qat-vf", {"resources:CUSTOM_QAT": "1", "trait:CUSTOM_QAT_INTEL": "required"}
    )
    held, while_away = create_arqs(stack.api, "qat-vf"), create_arqs(stack.api, "qat-vf")
    bind(stack, held[0], bindable_vf(stack, "0000:6b:00.2"))
    assert arq(stack.api, held[0]["uuid"])["state"] == ArqState.BOUND
    before, gone = present(stack), vanished(stack)
    pulled = uuid_of(node, "0000:31:00.0")

    # Every discovery from now on asks the GPU driver with its ETag and waits on a
    # scan that never ends: the agent reports that driver failed after its timeout.
    attribute = node.tree.device_dir(HUNG_GPU) / "numa_node"
    attribute.unlink()
    os.mkfifo(attribute)
    wait_until(
        lambda: (
            {d["type"]: d["state"] for d in stack.agent_report()["drivers"]}
            == {"GPU": "failed", "QAT": "ok"}
        ),
        "the agent's discoveries to wait on the hung GPU scan",
        on_timeout=stack.cluster.logs,
    )
    # Meanwhile a GPU leaves (the hung driver cannot say so) and one comes.
    node.tree.remove("0000:31:00.0")
    node.tree.add(FakeFunction("0000:3b:00.0", 0x10DE, 0x2331, 0x030200, driver="nvidia"))
    node.agent.kill()  # kill -9, a discovery waiting on the GPU driver

    down_and_kept(stack, before, gone)
    # A bind while the node is away ends at once, in a final state.
    bind(stack, while_away[0], bindable_vf(stack, "0000:6b:00.3"))
    assert arq(stack.api, while_away[0]["uuid"])["state"] in FINAL

    attribute.unlink()
    attribute.write_text("0\n")
    restart(stack)
    wait_for_truth(stack.api, [node], stack.cluster, {pulled})
    assert uuid_of(node, "0000:3b:00.0") in present(stack)
    assert arq(stack.api, held[0]["uuid"])["state"] == ArqState.BOUND
    wait_until(lambda: all_final(stack), "every request in a final state")


def test_an_agent_killed_during_a_hardware_change_sees_it_once_back(stack: Stack) -> None:
    node = stack.node
    assert node.agent is not None
    wait_for_truth(stack.api, [node], stack.cluster, set(alarmed_vanished(stack)))
    before, gone = present(stack), vanished(stack)
    node.agent.pause()  # the change lands with no discovery able to see it
    pulled = pull_gpu(node, "0000:b1:00.0")
    added = new_gpu(node, 0x3C)
    node.agent.kill()

    down_and_kept(stack, before, gone)
    restart(stack)
    wait_for_truth(stack.api, [node], stack.cluster, {*alarmed_vanished(stack), pulled})
    assert added in present(stack) and pulled not in present(stack)
    wait_until(lambda: all_final(stack), "every request in a final state")


def uuid_of(node: Node, address: str) -> str:
    [found] = [
        str(e.uuid)
        for e in discover(Kind.GPU, node.tree.root, node.name)
        if e.pci is not None and e.pci.address == address
    ]
    return found


def alarmed_vanished(stack: Stack) -> list[str]:
    return [subject for kind, subject in alarms(stack.api) if kind == AlarmKind.HARDWARE_VANISHED]
