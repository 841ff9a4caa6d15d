"""An agent started with ``--resource-provider-name`` (the name Nova gives its node's
compute-node provider, often an FQDN) sends it with its hardware answer, over HTTP,
and the conductor stores it for the Placement report; its heartbeats still confirm
the inventory without a new discovery, so their ETag and the answer's agree."""

from __future__ import annotations

from sqlalchemy import select

from accel.db.engine import make_engine
from accel.db.models import Agent
from accel.driver.fake_sysfs import FakeSysfs
from tests.integration.fleet import (
    FAST_AGENT,
    FAST_CONDUCTOR,
    FAST_DRIVER,
    agents,
    wait_for_devices,
)
from tests.integration.test_heartbeat_inventory import (
    NO_PERIODIC_RESYNC,
    confirmed_without_discovery,
)
from tests.processes import Cluster, internal_client, wait_until

FQDN = "node1.example.org"


def stored_name(database: str) -> str | None:
    engine = make_engine(database)
    try:
        with engine.connect() as connection:
            name: str | None = connection.scalar(
                select(Agent.resource_provider_name).where(Agent.name == "node1")
            )
            return name
    finally:
        engine.dispose()


def test_the_agents_provider_name_reaches_the_database_and_heartbeats_still_confirm(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, **{**FAST_CONDUCTOR, **NO_PERIODIC_RESYNC})
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", resource_provider_name=FQDN, **FAST_AGENT)
    cluster.driver("GPU", agent, gpu_server.root, **FAST_DRIVER)
    wait_for_devices(api, 4, cluster.logs())
    with internal_client(version="1.6") as client:
        answer = client.get(agent.url + "/v1/hardware").json()
    assert answer["resource_provider_name"] == FQDN
    assert wait_until(lambda: stored_name(sqlite_url), "the name to be stored") == FQDN

    confirmed_without_discovery(cluster, api, conductor)
    assert agents(api)["node1"]["state"] == "UP"
