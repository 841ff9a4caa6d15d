"""1,000 agents say hello at once to two conductors on PostgreSQL.

The agents are simulated in this test process: one HTTP client sends every hello
concurrently, on loopback, each naming an endpoint where nothing listens (so the
conductors' syncs of them fail, which they must survive), then each agent's
heartbeat to the other conductor. Asserted: every hello answered 200 (new the first
time, known the second), each agent registered exactly once and UP, both conductors
took hellos, and no conductor logged an error. Nothing here measures speed.
"""

from __future__ import annotations

import asyncio
import re
import socket

import httpx

from accel.cli.argv import Setting
from accel.states import AgentState
from tests.integration.fleet import get
from tests.postgres import ThrowawayPostgres
from tests.processes import TOKEN, Cluster, Service

AGENTS = 1000
HELLOS_LINE = re.compile(r'^accel_hellos_total\{component="conductor".*\} (\S+)$', re.M)
# Slow heartbeats, so no agent goes DOWN before the test looks on a busy machine, and
# a failed sync of a fake agent is not retried within the test: the hellos are tested.
CONDUCTOR: dict[str, Setting] = {
    "heartbeat_interval": 60,
    "resync_interval": 600,
    "sync_retry_after": 600,
    "max_concurrent_syncs": 8,
    "discovery_timeout": 2,
}


async def say_hello(conductors: list[Service], endpoint: str, known: bool) -> list[int]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Accel-Internal-Version": "1.1"}
    # A connection per hello, as 1,000 agents would open: no keep-alive connection that
    # the server may close just as the client reuses it.
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
    async with httpx.AsyncClient(headers=headers, timeout=120.0, limits=limits) as client:
        # Queued here rather than in the client's pool, whose queue is slow when long.
        in_flight = asyncio.Semaphore(100)

        async def one(i: int) -> int:
            body = {"status": "READY", "endpoint": endpoint, "name": f"node-{i:04d}"}
            async with in_flight:
                answer = await client.post(conductors[i % 2].url + "/v1/hello", json=body)
            if answer.status_code == 200:
                assert answer.json()["known"] is known, answer.text
            return answer.status_code

        return list(await asyncio.gather(*(one(i) for i in range(AGENTS))))


def hellos_counted(conductor: Service) -> float:
    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
        text = client.get(conductor.url + "/metrics").text
    return sum(float(value) for value in HELLOS_LINE.findall(text))


def test_a_thousand_agents_say_hello_at_once_to_two_conductors(
    cluster: Cluster, postgres: ThrowawayPostgres
) -> None:
    database = postgres.new_database()
    pair = [cluster.conductor(database, **CONDUCTOR) for _ in range(2)]
    api = cluster.api(database)
    # A port bound but not listening: every connection to it is refused at once.
    with socket.socket() as nowhere:
        nowhere.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{nowhere.getsockname()[1]}"

        answers = asyncio.run(say_hello(pair, endpoint, known=False))
        assert sorted(set(answers)) == [200], sorted(set(answers))
        # The same agents' heartbeats, each to the other conductor this time.
        answers = asyncio.run(say_hello(pair[::-1], endpoint, known=True))
        assert sorted(set(answers)) == [200], sorted(set(answers))

        listed = get(api, "/v2/agents")["agents"]
        assert sorted(a["name"] for a in listed) == [f"node-{i:04d}" for i in range(AGENTS)]
        assert {a["state"] for a in listed} == {AgentState.UP}
        counted = [hellos_counted(conductor) for conductor in pair]
        assert sum(counted) == 2 * AGENTS and all(counted)
    for conductor in pair:
        assert conductor.alive()
        log = conductor.log_path.read_text()
        assert "Traceback" not in log and " ERROR " not in log, conductor.log()
