"""The agent's heartbeat without a conductor: how long it waits between hellos, and
when a hello carries the node's inventory ETag (the numbered rules of
accel.agent.heartbeat). A node with no drivers discovers without a call; no rule
here needs one."""

from __future__ import annotations

import asyncio
import random

from accel.agent.discovery import NodeReport
from accel.agent.heartbeat import InventoryMemory, hello_pause
from accel.internal.discovery_http import NodeHardware, hardware_response
from accel.internal.schemas import DriverOutcome, Kind
from accel.internal.versions import NEWEST, Feature
from tests.agent.nodes import StoppedClock, node_agent

TOKEN = "agent-heartbeat-test-token-0123456789"
CONDUCTOR = "127.0.0.1:9"  # never called: these rules are the agent's own
HEARTBEAT = 10.0
V15 = Feature.HELLO_ETAG.since
V14 = (1, 4)
FOUND = NodeReport(
    NodeHardware(),
    [DriverOutcome(type=Kind.GPU, endpoint="127.0.0.1:7101", state="failed", error="x")],
)


def test_an_answered_agent_waits_one_heartbeat() -> None:
    assert hello_pause(10.0, failures=0) == 10.0


def test_unanswered_hellos_back_off_up_to_the_heartbeat_within_jittered_windows() -> None:
    random.seed(8)
    for failures, (low, high) in {1: (0.5, 1.0), 2: (1.0, 2.0), 3: (2.0, 4.0)}.items():
        pauses = [hello_pause(10.0, failures) for _ in range(200)]
        assert all(low <= pause <= high for pause in pauses)
    # Capped by the heartbeat interval, however long the conductors stay away.
    assert all(5.0 <= hello_pause(10.0, failures) <= 10.0 for failures in (5, 50, 5000))
    # A fast heartbeat (tests, small fleets) keeps retries that fast.
    assert all(hello_pause(0.5, failures) <= 0.5 for failures in range(1, 10))


def test_a_fleet_retrying_together_is_spread_over_the_window() -> None:
    random.seed(9)
    pauses = sorted(hello_pause(10.0, failures=4) for _ in range(1000))
    assert pauses[0] >= 4.0 and pauses[-1] <= 8.0
    # Spread across the window, not bunched at one instant.
    assert pauses[100] < 4.6 and pauses[900] > 7.4


def test_the_remembered_etag_is_the_one_the_nodes_hardware_answer_carries() -> None:
    memory = InventoryMemory(HEARTBEAT, StoppedClock())
    etag = memory.remember(V15, 1, FOUND)
    assert etag == hardware_response(V15, 1, FOUND.hardware, FOUND.drivers).headers["etag"]
    assert memory.last is not None and memory.last.etag == etag


def test_the_memory_recalls_an_etag_younger_than_its_age_at_the_same_version_and_drivers() -> None:
    clock = StoppedClock()
    memory = InventoryMemory(HEARTBEAT, clock)
    assert memory.recall(V15, 1) is None  # nothing computed yet
    etag = memory.remember(V15, 1, FOUND)
    clock.now += HEARTBEAT - 0.1
    assert memory.recall(V15, 1) == etag
    assert memory.recall(V14, 1) is None  # spoken at another version since
    assert memory.recall(V15, 2) is None  # a driver registered since
    clock.now += 0.1
    assert memory.recall(V15, 1) is None  # a heartbeat interval old


def test_a_heartbeats_hello_carries_the_etag_of_a_discovery_run_for_it() -> None:
    async def scenario() -> None:
        agent = node_agent(CONDUCTOR, TOKEN, HEARTBEAT)
        try:
            etag = await agent.heartbeat.inventory_etag(CONDUCTOR, fresh=True)
            assert agent.discovery.state.generation == 1
            assert etag is not None and etag.startswith('"')
            assert agent.heartbeat.memory.last is not None
            assert agent.heartbeat.memory.last.etag == etag
            # Each heartbeat discovers again: hardware may change between two.
            assert await agent.heartbeat.inventory_etag(CONDUCTOR, fresh=True) == etag
            assert agent.discovery.state.generation == 2
        finally:
            await agent.aclose()

    asyncio.run(scenario())


def test_a_retry_runs_no_discovery_and_reuses_the_last_etag_while_young() -> None:
    async def scenario() -> None:
        clock = StoppedClock()
        agent = node_agent(CONDUCTOR, TOKEN, HEARTBEAT, clock)
        heartbeat = agent.heartbeat
        try:
            assert await heartbeat.inventory_etag(CONDUCTOR, fresh=False) is None
            etag = await heartbeat.inventory_etag(CONDUCTOR, fresh=True)
            clock.now += HEARTBEAT / 2
            assert await heartbeat.inventory_etag(CONDUCTOR, fresh=False) == etag
            assert agent.discovery.state.generation == 1
            clock.now += HEARTBEAT / 2
            assert await heartbeat.inventory_etag(CONDUCTOR, fresh=False) is None
        finally:
            await agent.aclose()

    asyncio.run(scenario())


def test_a_retry_after_a_driver_registered_carries_no_etag() -> None:
    async def scenario() -> None:
        agent = node_agent(CONDUCTOR, TOKEN, HEARTBEAT, StoppedClock())
        try:
            assert await agent.heartbeat.inventory_etag(CONDUCTOR, fresh=True) is not None
            # A kind new to the node registers without a call.
            assert not await agent.drivers.register(Kind.GPU, "127.0.0.1:7101")
            assert await agent.heartbeat.inventory_etag(CONDUCTOR, fresh=False) is None
        finally:
            await agent.aclose()

    asyncio.run(scenario())


def test_a_conductor_older_than_1_5_gets_no_etag_and_costs_no_discovery() -> None:
    async def scenario() -> None:
        agent = node_agent(CONDUCTOR, TOKEN, HEARTBEAT, StoppedClock())
        heartbeat = agent.heartbeat
        try:
            etag = await heartbeat.inventory_etag(CONDUCTOR, fresh=True)
            heartbeat.client.peer_spoke(CONDUCTOR, V14)  # it went back to an older release
            assert await heartbeat.inventory_etag(CONDUCTOR, fresh=True) is None
            assert await heartbeat.inventory_etag(CONDUCTOR, fresh=False) is None
            assert agent.discovery.state.generation == 1
            heartbeat.client.peer_spoke(CONDUCTOR, NEWEST)  # and was upgraded again
            assert await heartbeat.inventory_etag(CONDUCTOR, fresh=False) == etag
        finally:
            await agent.aclose()

    asyncio.run(scenario())


def test_the_heartbeat_reports_to_the_conductors_it_is_given() -> None:
    agent = node_agent(CONDUCTOR, TOKEN, HEARTBEAT)
    assert agent.heartbeat.conductor == CONDUCTOR
    agent.heartbeat.report_to(("127.0.0.1:11", "127.0.0.1:12"))
    assert agent.heartbeat.conductor == "127.0.0.1:11"
    agent.heartbeat.report_to(())
    assert agent.heartbeat.conductor is None
