"""Which of an agent's clients share their process's HTTP session (peer_http.py): the
one to its drivers, whose peers are its node's own, does; the one to its conductors
does not, or the simulator's thousands of agents would share one session's few
connections to their conductor."""

from __future__ import annotations

import asyncio

from accel.agent.service import AgentSettings, _client, _conductor_client
from accel.internal.versions import VersionRange

AGENTS = 12  # more than a session's 8 connections to one peer


def settings(name: str) -> AgentSettings:
    return AgentSettings(
        name=name, conductors=(), endpoint="127.0.0.1:9", token="t", versions=VersionRange()
    )


def test_agents_of_one_process_call_their_conductor_each_over_their_own_connections() -> None:
    async def scenario() -> tuple[int, bool]:
        arrived, everyone = 0, asyncio.Event()

        async def conductor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal arrived
            await reader.readuntil(b"\r\n\r\n")
            arrived += 1
            if arrived == AGENTS:
                everyone.set()
            await asyncio.wait_for(everyone.wait(), 30)  # answers once all are here
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(conductor, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        clients = [_conductor_client(settings(f"node{i}")) for i in range(AGENTS)]
        try:
            calls = asyncio.gather(*(c._http.request("GET", url, "/", {}) for c in clients))
            answers = await asyncio.wait_for(calls, 5)
        finally:
            for client in clients:
                await client.aclose()
            server.close()
        drivers = [_client(settings(f"node{i}")) for i in range(2)]
        shared = drivers[0]._http._opened() is drivers[1]._http._opened()
        for client in drivers:
            await client.aclose()
        return sum(a.text == "ok" for a in answers), shared

    # All at once: a shared session would have let 8 through and held the rest.
    assert asyncio.run(scenario()) == (AGENTS, True)
