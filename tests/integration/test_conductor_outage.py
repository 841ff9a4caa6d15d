"""A conductor that was away, stopped or frozen, for longer than --agent-down-after.

While it was away no hello could reach it, so the silence it finds on its return
says nothing about the agents: it gives them one --agent-down-after from the moment
it can hear them again. An agent that really died meanwhile still goes DOWN after
that, with one alarm, and no live one does.
"""

from __future__ import annotations

import time
from typing import Literal

import pytest

from accel.cli.argv import Setting
from accel.states import AgentState, AlarmKind
from tests.integration.fleet import FAST_AGENT, get
from tests.integration.fleet import agents as get_agents
from tests.postgres import ThrowawayPostgres
from tests.processes import Cluster, Service, wait_until

DOWN_AFTER = 3.0
CONDUCTOR: dict[str, Setting] = {
    "heartbeat_interval": 0.5,
    "agent_down_after": DOWN_AFTER,
    "resync_interval": 60,
}


def all_alarms(api: Service) -> list[tuple[str, str]]:
    return [(a["kind"], a["subject"]) for a in get(api, "/v2/alarms", state="all")["alarms"]]


@pytest.mark.parametrize("outage", ["restart", "pause"])
def test_after_an_outage_longer_than_agent_down_after_only_the_dead_agent_goes_down(
    cluster: Cluster, database_url: str, outage: Literal["restart", "pause"]
) -> None:
    conductor = cluster.conductor(database_url, **CONDUCTOR)
    api = cluster.api(database_url)
    live = cluster.agent([conductor.url], "live", **FAST_AGENT)
    dead = cluster.agent([conductor.url], "dead", **FAST_AGENT)
    wait_until(
        lambda: (
            {a["state"] for a in get_agents(api).values()} == {AgentState.UP}
            and len(get_agents(api)) == 2
        ),
        "both agents UP",
        on_timeout=cluster.logs,
    )

    if outage == "restart":
        conductor.stop()
    else:
        conductor.pause()
    dead.kill()
    # The outage itself: the conductor must be away for longer than --agent-down-after.
    time.sleep(DOWN_AFTER * 1.5)
    if outage == "restart":
        conductor = cluster.restart(conductor)
    else:
        conductor.resume()

    # Once the dead agent is DOWN, the returning conductor has judged the fleet.
    wait_until(
        lambda: get_agents(api)["dead"]["state"] == AgentState.DOWN,
        "the dead agent DOWN",
        on_timeout=cluster.logs,
    )
    assert get_agents(api)["live"]["state"] == AgentState.UP
    assert all_alarms(api) == [(AlarmKind.AGENT_DOWN, "dead")]
    assert live.alive() and conductor.alive()


@pytest.mark.postgres
def test_after_a_database_outage_longer_than_agent_down_after_no_live_agent_goes_down(
    cluster: Cluster, postgres: ThrowawayPostgres
) -> None:
    database = postgres.new_database()
    conductor = cluster.conductor(database, **CONDUCTOR)
    api = cluster.api(database)
    live = cluster.agent([conductor.url], "live", **FAST_AGENT)
    dead = cluster.agent([conductor.url], "dead", **FAST_AGENT)
    wait_until(lambda: len(get_agents(api)) == 2, "both agents registered", on_timeout=cluster.logs)

    postgres.stop()
    try:
        dead.kill()
        # Hellos reach the conductor but cannot be recorded for longer than the grace.
        time.sleep(DOWN_AFTER * 1.5)
    finally:
        postgres.start()

    wait_until(
        lambda: get_agents(api)["dead"]["state"] == AgentState.DOWN,
        "the dead agent DOWN",
        timeout=60,
        on_timeout=cluster.logs,
    )
    assert get_agents(api)["live"]["state"] == AgentState.UP
    assert all_alarms(api) == [(AlarmKind.AGENT_DOWN, "dead")]
    assert live.alive() and conductor.alive()
