"""Internal endpoints refuse strangers, bad bodies and forged endpoints, storing nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from accel.driver.fake_sysfs import FakeSysfs
from tests.integration.fleet import FAST_AGENT, FAST_CONDUCTOR, FAST_DRIVER, agents
from tests.processes import TOKEN, Cluster, Service, agent_drivers, internal_client

GOOD_HELLO = {"status": "READY", "endpoint": "127.0.0.1:6671", "name": "node1"}


@pytest.fixture(scope="module")
def conductor_and_api(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Service, Service]]:
    """One conductor and api for every test here that must leave nothing stored."""
    workdir = tmp_path_factory.mktemp("refusals")
    shared = Cluster(workdir)
    database = f"sqlite:///{workdir / 'accel.db'}"
    try:
        yield shared.conductor(database, **FAST_CONDUCTOR), shared.api(database)
    finally:
        shared.stop_all()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with internal_client() as opened:
        yield opened


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer not-the-token-at-all"}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Authorization": f"Bearer {TOKEN}", "Accel-Internal-Version": "2.0"}, 406),
        ({"Authorization": f"Bearer {TOKEN}", "Accel-Internal-Version": "1.9"}, 406),
    ],
)
def test_the_conductor_refuses_strangers_and_unknown_versions(
    conductor_and_api: tuple[Service, Service], headers: dict[str, str], status: int
) -> None:
    conductor, api = conductor_and_api
    response = httpx.post(conductor.url + "/v1/hello", json=GOOD_HELLO, headers=headers)
    assert response.status_code == status
    assert "error" in response.json()
    if status == 406:
        assert (response.json()["min_version"], response.json()["max_version"]) == ("1.0", "1.6")
    assert agents(api) == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "READY"}, "endpoint"),
        ({**GOOD_HELLO, "status": "SLEEPING"}, "status"),
        ({**GOOD_HELLO, "endpoint": "127.0.0.1"}, "endpoint"),
        ({**GOOD_HELLO, "endpoint": "127.0.0.1:0"}, "endpoint"),
        ({**GOOD_HELLO, "name": "../../etc"}, "name"),
        # Forms the resolver takes for 127.0.0.1 but a peer cannot be called back at.
        ({**GOOD_HELLO, "endpoint": "2130706433:6671"}, "endpoint"),
        ({**GOOD_HELLO, "endpoint": "127.1:6671"}, "endpoint"),
        ({**GOOD_HELLO, "endpoint": "0177.0.0.1:6671"}, "endpoint"),
        ({**GOOD_HELLO, "endpoint": "0x7f000001:6671"}, "endpoint"),
        ({**GOOD_HELLO, "name": "."}, "name"),
        ({**GOOD_HELLO, "name": ".."}, "name"),
        ({**GOOD_HELLO, "name": "-"}, "name"),
        ({**GOOD_HELLO, "admin": True}, "admin"),
        ([GOOD_HELLO], "body"),
    ],
)
def test_bad_hellos_are_400_naming_the_field_and_store_nothing(
    conductor_and_api: tuple[Service, Service], client: httpx.Client, body: Any, field: str
) -> None:
    conductor, api = conductor_and_api
    response = client.post(conductor.url + "/v1/hello", json=body)
    assert response.status_code == 400
    answer = response.json()
    named = [problem["field"] for problem in answer.get("problems", [])]
    assert field in named or field in answer["error"]
    assert agents(api) == {}


def test_a_body_that_is_not_json_is_400(
    conductor_and_api: tuple[Service, Service], client: httpx.Client
) -> None:
    conductor, api = conductor_and_api
    response = client.post(
        conductor.url + "/v1/hello",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400 and "JSON" in response.json()["error"]
    assert agents(api) == {}


def test_an_oversized_body_is_413(
    conductor_and_api: tuple[Service, Service], client: httpx.Client
) -> None:
    conductor, api = conductor_and_api
    huge = {**GOOD_HELLO, "name": "n" * (2 << 20)}
    response = client.post(conductor.url + "/v1/hello", json=huge)
    assert response.status_code == 413 and "larger than" in response.json()["error"]
    assert agents(api) == {}


def test_a_hello_naming_someone_elses_endpoint_is_refused(
    conductor_and_api: tuple[Service, Service], client: httpx.Client
) -> None:
    conductor, api = conductor_and_api
    # From 127.0.0.1, claiming to be a host elsewhere: the conductor would call it next.
    forged = {**GOOD_HELLO, "endpoint": "192.0.2.10:6671"}
    response = client.post(conductor.url + "/v1/hello", json=forged)
    assert response.status_code == 403
    assert "not the address this hello came from" in response.json()["error"]
    assert agents(api) == {}


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded"])
def test_a_forwarded_for_header_cannot_lend_a_hello_another_source(
    conductor_and_api: tuple[Service, Service], client: httpx.Client, header: str
) -> None:
    """The source is the socket's peer: internal services sit behind no proxy, and a
    process on the conductor's own host must not pass for another host."""
    conductor, api = conductor_and_api
    forged = {**GOOD_HELLO, "endpoint": "192.0.2.10:6671"}
    value = "192.0.2.10" if header == "X-Forwarded-For" else "for=192.0.2.10"
    response = client.post(conductor.url + "/v1/hello", json=forged, headers={header: value})
    assert response.status_code == 403
    assert "(127.0.0.1)" in response.json()["error"]
    assert agents(api) == {}


def test_allowed_networks_admit_endpoints_behind_nat(
    cluster: Cluster, sqlite_url: str, client: httpx.Client
) -> None:
    conductor = cluster.conductor(
        sqlite_url, **FAST_CONDUCTOR, allowed_agent_networks="192.0.2.0/24"
    )
    api = cluster.api(sqlite_url)
    response = client.post(
        conductor.url + "/v1/hello", json={**GOOD_HELLO, "endpoint": "192.0.2.10:6671"}
    )
    assert response.status_code == 200
    assert agents(api)["node1"]["endpoint"] == "192.0.2.10:6671"


def test_hellos_are_idempotent(
    conductor_and_api: tuple[Service, Service], client: httpx.Client
) -> None:
    conductor, api = conductor_and_api
    answers = [client.post(conductor.url + "/v1/hello", json=GOOD_HELLO).json() for _ in range(3)]
    assert [a["known"] for a in answers] == [False, True, True]
    assert list(agents(api)) == ["node1"]


def test_the_agent_guards_its_drivers_hello_the_same_way(
    cluster: Cluster, sqlite_url: str, client: httpx.Client, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    hello = {"status": "READY", "endpoint": "127.0.0.1:7000", "type": "GPU"}
    assert httpx.post(agent.url + "/v1/hello", json=hello).status_code == 401
    assert client.post(agent.url + "/v1/hello", json={**hello, "type": "TPU"}).status_code == 400
    forged = client.post(agent.url + "/v1/hello", json={**hello, "endpoint": "192.0.2.1:80"})
    assert forged.status_code == 403
    proxied = client.post(
        agent.url + "/v1/hello",
        json={**hello, "endpoint": "192.0.2.1:80"},
        headers={"X-Forwarded-For": "192.0.2.1"},
    )
    assert proxied.status_code == 403
    for odd in ("2130706433:7000", "127.1:7000", "0177.0.0.1:7000", "[::1%lo]:7000"):
        refused = client.post(agent.url + "/v1/hello", json={**hello, "endpoint": odd})
        assert refused.status_code == 400, odd
        assert "endpoint" in refused.json()["error"]
    assert agent_drivers(agent) == []
    driver = cluster.driver("GPU", agent, gpu_server.root, **FAST_DRIVER)
    bad_wait = client.get(driver.url + "/v1/hardware", params={"wait": "soon"})
    assert bad_wait.status_code == 400 and "wait" in bad_wait.json()["error"]


def test_every_component_lists_its_versions_to_anyone(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    driver = cluster.driver("QAT", agent, gpu_server.root, **FAST_DRIVER)
    for service, component in ((conductor, "conductor"), (agent, "agent"), (driver, "driver")):
        answer = httpx.get(service.url + "/").json()
        assert answer["component"] == component
        assert answer["versions"] == [
            {"id": "v1", "status": "CURRENT", "min_version": "1.0", "max_version": "1.6"}
        ]


def test_a_flood_of_hellos_is_cut_off_and_cannot_grow_the_registry(
    cluster: Cluster, sqlite_url: str, client: httpx.Client
) -> None:
    conductor = cluster.conductor(
        sqlite_url,
        **FAST_CONDUCTOR,
        max_agents=2,
        hello_rate=0.01,
        hello_burst=4,
    )
    api = cluster.api(sqlite_url)

    def hello(name: str) -> int:
        body = {**GOOD_HELLO, "name": name}
        return client.post(conductor.url + "/v1/hello", json=body).status_code

    assert [hello("a"), hello("b")] == [200, 200]
    full = client.post(conductor.url + "/v1/hello", json={**GOOD_HELLO, "name": "c"})
    assert full.status_code == 429 and "--max-agents" in full.json()["error"]
    assert hello("a") == 200  # known agents still get through
    assert hello("a") == 429  # the burst of four is spent
    assert sorted(agents(api)) == ["a", "b"]
    # The token never shows in what a component writes.
    assert all(TOKEN not in service.log() for service in cluster.services)
