"""The agents and drivers of one process share one set of route objects per kind
(accel.internal.server's ``service_route``), and each app still answers for its own
service: two drivers served side by side, each asked for itself."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from accel.agent.service import AgentService, AgentSettings
from accel.driver.discovery import Discoverer
from accel.driver.fake_sysfs import FakeSysfs
from accel.driver.pci_ids import PciIdDatabase
from accel.driver.service import DriverService, DriverSettings
from accel.internal.schemas import Kind
from accel.internal.versions import VersionRange
from accel.sim.servers import ServerGroup
from accel.sockets import bind, endpoint_of

TOKEN = "shared-routes-test-token-0123456789"


def routes_of(app: ASGIApp) -> list[BaseRoute]:
    """The routes of the Starlette app under an internal app's wrappers."""
    for _ in range(10):
        if isinstance(app, Starlette):
            return list(app.routes)
        app = app.app  # type: ignore[attr-defined]
    raise AssertionError("no Starlette app under the wrappers")


def agent(name: str) -> AgentService:
    return AgentService(
        AgentSettings(
            name=name, conductors=(), endpoint="127.0.0.1:9", token=TOKEN, versions=VersionRange()
        )
    )


def driver(kind: Kind, tree: FakeSysfs, endpoint: str) -> DriverService:
    return DriverService(
        DriverSettings(
            discoverer=Discoverer(kind, tree.root, names=PciIdDatabase.empty()),
            agent="http://127.0.0.1:9",  # nobody: hellos fail and are retried, harmlessly
            endpoint=endpoint,
            token=TOKEN,
            versions=VersionRange(),
            node="node1",
            health_interval=None,
        )
    )


def test_services_of_one_kind_share_their_route_objects(gpu_server: FakeSysfs) -> None:
    first, second = routes_of(agent("a").app()), routes_of(agent("b").app())
    assert len(first) == len(second) >= 9
    assert all(x is y for x, y in zip(first, second, strict=True))
    gpu = routes_of(driver(Kind.GPU, gpu_server, "127.0.0.1:9").app())
    qat = routes_of(driver(Kind.QAT, gpu_server, "127.0.0.1:9").app())
    assert all(x is y for x, y in zip(gpu, qat, strict=True))


def test_each_app_answers_for_its_own_service(gpu_server: FakeSysfs) -> None:
    async def scenario() -> list[tuple[Any, int]]:
        group, answers = ServerGroup(), []
        socks = {kind: bind("127.0.0.1:0") for kind in (Kind.GPU, Kind.QAT)}
        try:
            for kind, sock in socks.items():
                await group.start(driver(kind, gpu_server, endpoint_of(sock)).app(), sock)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(headers=headers, timeout=10) as client:
                for sock in socks.values():
                    url = f"http://{endpoint_of(sock)}"
                    root = (await client.get(url + "/")).json()
                    hardware = (await client.get(url + "/v1/hardware")).json()["hardware"]
                    answers.append((root["kind"], len(hardware)))
        finally:
            await group.stop()
        return answers

    # The fake GPU server has 4 GPUs and 2 QAT cards: each driver answers its own.
    assert asyncio.run(scenario()) == [("GPU", 4), ("QAT", 2)]
