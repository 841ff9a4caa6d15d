"""The conductor's Placement reports, against a real Placement 16 (one per module).

Each test has its own accel database and its own node names, so that tests sharing
the Placement never see each other's providers. The loop's rounds are run by hand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.placement.client import PlacementClient
from accel.conductor.placement.loop import PlacementLoop
from accel.db.models import Device
from accel.driver.fake_sysfs import FakeSysfs
from accel.internal.schemas import Kind
from accel.metrics import PLACEMENT_PENDING
from accel.states import AgentState, AlarmKind, DeviceStatus
from tests.os_services.conftest import Recorder
from tests.os_services.placement_rounds import (
    FAST,
    active,
    calls,
    deployables,
    hardware,
    loop_for,
    node_row,
    run_round,
    store,
)
from tests.placement_service import ThrowawayPlacement, children, make_root


def test_the_first_report_builds_cyborgs_tree_and_an_unchanged_node_costs_no_call(
    sessions: sessionmaker[Session],
    placement: ThrowawayPlacement,
    gpu_server: FakeSysfs,
    node: str,
) -> None:
    root = make_root(placement, node)
    store(sessions, node, hardware(gpu_server, node))
    loop = loop_for(sessions, placement)
    puts_before = calls("PUT", "ok")

    assert run_round(loop) == 1
    first_report = loop.client.calls
    tree = children(placement, root)
    # One child per deployable, named and numbered as /v2/deployables shows them.
    assert {name: child["uuid"] for name, child in tree.items()} == deployables(sessions, node)
    assert all(child["parent"] == root for child in tree.values())
    gpu = tree[f"{node}_0000:17:00.0"]
    assert gpu["inventories"]["PGPU"] | {} == {
        "total": 1,
        "max_unit": 1,
        "reserved": 0,
        "min_unit": 1,
        "step_size": 1,
        "allocation_ratio": 1.0,
    }
    assert {"OWNER_CYBORG", "CUSTOM_GPU_NVIDIA"} <= gpu["traits"]
    qat_vf = tree[f"{node}_0000:6b:00.1"]
    assert set(qat_vf["inventories"]) == {"CUSTOM_QAT"}  # a custom class, made by accel
    assert node_row(sessions, node).pending is False
    assert node_row(sessions, node).last_error is None
    assert PLACEMENT_PENDING._value.get() == 0
    assert calls("PUT", "ok") > puts_before
    # Two calls for the node, then three per new provider (create, inventory, traits),
    # plus one per custom class and trait, once per conductor's life.
    custom = {
        name
        for child in tree.values()
        for name in (*child["inventories"], *child["traits"])
        if name.startswith("CUSTOM_")
    }
    assert first_report == 2 + 3 * len(tree) + len(custom)

    # Nothing changed: the next rounds make no call at all.
    assert run_round(loop) == 0
    assert loop.client.calls == first_report
    # A new loop (a restarted conductor) knows from the database what was reported.
    again = loop_for(sessions, placement)
    assert run_round(again) == 0 and again.client.calls == 0


def test_what_accel_would_not_hand_out_is_reserved_in_placement(
    sessions: sessionmaker[Session],
    placement: ThrowawayPlacement,
    gpu_server: FakeSysfs,
    node: str,
) -> None:
    root = make_root(placement, node)
    store(sessions, node, hardware(gpu_server, node, (Kind.GPU,)))
    loop = loop_for(sessions, placement)
    run_round(loop)
    gpu = f"{node}_0000:17:00.0"

    def reserved() -> int:
        return int(children(placement, root)[gpu]["inventories"]["PGPU"]["reserved"])

    assert reserved() == 0
    with sessions.begin() as session:
        session.execute(
            update(Device)
            .where(Device.pci_address == "0000:17:00.0", Device.hostname == node)
            .values(status=DeviceStatus.MAINTAINING)
        )
    run_round(loop)
    assert reserved() == 1
    with sessions.begin() as session:
        session.execute(
            update(Device).where(Device.hostname == node).values(status=DeviceStatus.ENABLED)
        )
    run_round(loop)
    assert reserved() == 0
    # The agent DOWN: nothing of the node is offered until it is back.
    from accel.db.models import Agent

    with sessions.begin() as session:
        session.execute(update(Agent).where(Agent.name == node).values(state=AgentState.DOWN))
    run_round(loop)
    assert all(
        inventory["reserved"] == inventory["total"]
        for child in children(placement, root).values()
        for inventory in child["inventories"].values()
    )
    with sessions.begin() as session:
        session.execute(update(Agent).where(Agent.name == node).values(state=AgentState.UP))
    run_round(loop)
    assert reserved() == 0


def test_a_missing_compute_node_provider_is_an_alarm_and_a_retry_not_an_orphan(
    sessions: sessionmaker[Session],
    placement: ThrowawayPlacement,
    gpu_server: FakeSysfs,
    node: str,
) -> None:
    store(sessions, node, hardware(gpu_server, node, (Kind.FPGA,)))
    loop = loop_for(sessions, placement)
    run_round(loop)
    row = node_row(sessions, node)
    assert row.pending and row.last_error and node in row.last_error
    assert active(sessions, AlarmKind.PLACEMENT_ROOT_MISSING) == [node]
    with placement.client() as client:
        orphans = client.get("/resource_providers", params={"name": f"{node}_0000:86:00.0"})
        assert orphans.json()["resource_providers"] == []
    root = make_root(placement, node)
    run_round(loop)  # the retry, once its short backoff is over
    assert not node_row(sessions, node).pending
    assert list(children(placement, root)) == [f"{node}_0000:86:00.0"]
    assert active(sessions, AlarmKind.PLACEMENT_ROOT_MISSING) == []


def test_placement_down_loses_nothing(
    sessions: sessionmaker[Session],
    placement: ThrowawayPlacement,
    gpu_server: FakeSysfs,
    node: str,
    unused_url: str,
) -> None:
    root = make_root(placement, node)
    store(sessions, node, hardware(gpu_server, node, (Kind.FPGA,)))
    down = loop_for(sessions, placement, url=unused_url)
    unreachable = calls("GET", "unreachable")
    run_round(down)
    row = node_row(sessions, node)
    assert row.pending and row.last_error and "GET" in row.last_error
    assert calls("GET", "unreachable") == unreachable + 1
    assert children(placement, root) == {}
    # Placement back (here: the same conductor's next life, pointed at it).
    run_round(loop_for(sessions, placement))
    assert not node_row(sessions, node).pending
    assert list(children(placement, root)) == [f"{node}_0000:86:00.0"]


@pytest.fixture
def unused_url() -> str:
    from tests.processes import bound_socket, url_of

    sock = bound_socket()  # bound and listening, never accepting: then closed
    url = url_of(sock)
    sock.close()
    return url


def test_drift_is_put_right_by_the_next_check(
    sessions: sessionmaker[Session],
    placement: ThrowawayPlacement,
    gpu_server: FakeSysfs,
    node: str,
) -> None:
    root = make_root(placement, node)
    store(sessions, node, hardware(gpu_server, node, (Kind.GPU, Kind.FPGA)))
    loop = loop_for(sessions, placement)
    run_round(loop)
    before = children(placement, root)
    gpu, fpga = before[f"{node}_0000:17:00.0"], before[f"{node}_0000:86:00.0"]
    with placement.client() as client:
        assert client.delete(f"/resource_providers/{gpu['uuid']}").status_code == 204
        generation = client.get(f"/resource_providers/{fpga['uuid']}").json()["generation"]
        hand = {"resource_provider_generation": generation, "traits": ["CUSTOM_BY_HAND"]}
        client.put("/traits/CUSTOM_BY_HAND")
        assert client.put(f"/resource_providers/{fpga['uuid']}/traits", json=hand).is_success
    # Not yet checked: the hand's changes stand until the check is due.
    run_round(loop)
    assert f"{node}_0000:17:00.0" not in children(placement, root)
    checking = loop_for(sessions, placement, settings=dataclasses.replace(FAST, check_interval=0))
    run_round(checking)
    assert children(placement, root) == before


class RacingClient(PlacementClient):
    """Another writer changes each provider between accel's read and its write, once."""

    def __init__(self, placement: ThrowawayPlacement, inner: PlacementClient) -> None:
        super().__init__(inner.adapter)
        self.placement = placement
        self.raced: set[str] = set()

    def put_inventories(
        self, uuid: str, generation: int, inventories: dict[str, dict[str, int]]
    ) -> int:
        if uuid not in self.raced:
            self.raced.add(uuid)
            with self.placement.client() as client:
                current = client.get(f"/resource_providers/{uuid}/traits").json()
                current["traits"].append("CUSTOM_RACE")
                client.put("/traits/CUSTOM_RACE")
                assert client.put(f"/resource_providers/{uuid}/traits", json=current).is_success
        return super().put_inventories(uuid, generation, inventories)


def test_a_generation_conflict_is_read_again_and_retried(
    sessions: sessionmaker[Session],
    placement: ThrowawayPlacement,
    gpu_server: FakeSysfs,
    node: str,
) -> None:
    root = make_root(placement, node)
    store(sessions, node, hardware(gpu_server, node, (Kind.FPGA,)))
    plain = loop_for(sessions, placement)
    loop = PlacementLoop(sessions, RacingClient(placement, plain.client), "conductor-a", FAST)
    conflicts = calls("PUT", "conflict")
    run_round(loop)
    assert calls("PUT", "conflict") == conflicts + 1
    assert not node_row(sessions, node).pending
    (fpga,) = children(placement, root).values()
    assert fpga["inventories"]["FPGA"]["total"] == 1
    assert "CUSTOM_RACE" not in fpga["traits"]  # the other writer's change, read and undone


def allocate(placement: ThrowawayPlacement, provider: str, rc: str) -> str:
    consumer = str(uuid.uuid4())
    body = {
        "allocations": {provider: {"resources": {rc: 1}}},
        "project_id": str(uuid.uuid4()),
        "user_id": str(uuid.uuid4()),
        "consumer_generation": None,
    }
    with placement.client("1.28") as client:  # as Nova claims
        answer = client.put(f"/allocations/{consumer}", json=body)
        assert answer.status_code == 204, answer.text
    return consumer


def test_vanished_hardware_goes_unless_allocations_hold_it(
    sessions: sessionmaker[Session],
    placement: ThrowawayPlacement,
    gpu_server: FakeSysfs,
    node: str,
    tmp_path: Path,
) -> None:
    root = make_root(placement, node)
    store(sessions, node, hardware(gpu_server, node, (Kind.GPU, Kind.FPGA)))
    loop = loop_for(sessions, placement)
    run_round(loop)
    tree = children(placement, root)
    gpu = tree[f"{node}_0000:17:00.0"]["uuid"]
    consumer = allocate(placement, gpu, "PGPU")
    # Every device vanishes (an empty report): the FPGA's provider goes, the GPU's
    # stays, fully reserved, with an alarm.
    empty = FakeSysfs(tmp_path / "empty")
    store(sessions, node, hardware(empty, node, (Kind.GPU, Kind.FPGA)))
    run_round(loop)
    left = children(placement, root)
    assert list(left) == [f"{node}_0000:17:00.0"]
    assert left[f"{node}_0000:17:00.0"]["inventories"]["PGPU"]["reserved"] == 1
    assert active(sessions, AlarmKind.PLACEMENT_PROVIDER_IN_USE) == [gpu]
    row = node_row(sessions, node)
    assert row.pending and row.last_error and "allocations" in row.last_error
    # The allocation goes: the provider goes at the next try, and the alarm clears.
    with placement.client() as client:
        assert client.delete(f"/allocations/{consumer}").status_code == 204
    run_round(loop)
    assert children(placement, root) == {}
    assert active(sessions, AlarmKind.PLACEMENT_PROVIDER_IN_USE) == []
    assert not node_row(sessions, node).pending


def test_each_node_is_reported_by_one_conductor_at_a_time(
    sessions: sessionmaker[Session],
    placement: ThrowawayPlacement,
    gpu_server: FakeSysfs,
) -> None:
    nodes = [f"pair-{uuid.uuid4().hex[:8]}-{n}" for n in range(4)]
    for name in nodes:
        make_root(placement, name)
        store(sessions, name, hardware(gpu_server, name, (Kind.FPGA,)))
    first = loop_for(sessions, placement, owner="conductor-a")
    second = loop_for(sessions, placement, owner="conductor-b")

    async def both() -> list[int]:
        return list(await asyncio.gather(first.round(), second.round()))

    reported = asyncio.run(both())
    assert sum(reported) == len(nodes)
    # Two calls for the node and three for its one provider, once per node in all.
    assert first.client.calls + second.client.calls <= len(nodes) * 5 + 2
    assert all(not node_row(sessions, name).pending for name in nodes)


def test_a_gpus_virtual_function_is_never_offered_as_a_whole_gpu() -> None:
    from accel.conductor.placement.offer import why_not_whole_gpu

    assert why_not_whole_gpu("PGPU", "n1_0000:17:00.0", "n1", "0000:17:00.0") is None
    reason = why_not_whole_gpu("PGPU", "n1_0000:17:00.4", "n1", "0000:17:00.0")
    assert reason and "virtual function" in reason
    # A VF of another kind is what that kind offers (each QAT or NIC VF is one unit).
    assert why_not_whole_gpu("CUSTOM_QAT", "n1_0000:6b:00.1", "n1", "0000:6b:00.0") is None


def test_a_placement_answering_garbage_leaves_the_node_pending(
    sessions: sessionmaker[Session],
    placement: ThrowawayPlacement,
    gpu_server: FakeSysfs,
    node: str,
    recorder: Recorder,
) -> None:
    store(sessions, node, hardware(gpu_server, node, (Kind.FPGA,)))
    run_round(loop_for(sessions, placement, url=recorder.url))  # 200 with "{}" to all
    row = node_row(sessions, node)
    assert row.pending and row.last_error and "not the answer Placement gives" in row.last_error
    assert active(sessions, AlarmKind.PLACEMENT_ROOT_MISSING) == []


def test_a_node_nova_knows_by_another_name_is_reported_under_that_root(
    sessions: sessionmaker[Session],
    placement: ThrowawayPlacement,
    gpu_server: FakeSysfs,
    node: str,
) -> None:
    """The agent's --resource-provider-name reaches the conductor with its report;
    the children keep Cyborg's names, after the node's own name."""
    fqdn = f"{node}.example.org"
    root = make_root(placement, fqdn)
    found = hardware(gpu_server, node, (Kind.FPGA,)).model_copy(
        update={"resource_provider_name": fqdn}
    )
    store(sessions, node, found)
    run_round(loop_for(sessions, placement))
    assert list(children(placement, root)) == [f"{node}_0000:86:00.0"]
    assert active(sessions, AlarmKind.PLACEMENT_ROOT_MISSING) == []
