"""The api's cached reads: never stale after a write, never shared between requests
that differ, and conditional GETs (ETag, If-None-Match) answered with 304."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from accel.api.app import ApiSettings, create_app
from accel.api.auth import Identity
from accel.conductor.agents import record_hello
from accel.conductor.reconcile import store_inventory
from accel.db.engine import make_engine, session_factory
from accel.db.models import Device
from accel.internal.schemas import HardwareList
from accel.states import DeviceStatus
from tests.api.test_api import fill

T1 = dt.datetime(2026, 11, 27, 13, 0, tzinfo=dt.UTC)
TOKENS = {
    "admin": Identity(user_id="a", project_id="p", roles=("admin",)),
    "member": Identity(user_id="m", project_id="p", roles=("member",)),
}
MV23 = {"OpenStack-API-Version": "accelerator 2.3"}


@pytest.fixture
def found(database_url: str, gpu_server: object) -> HardwareList:
    return fill(database_url, gpu_server)  # type: ignore[arg-type]


@pytest.fixture
def api(database_url: str, found: HardwareList) -> Iterator[TestClient]:
    app = create_app(make_engine(database_url), ApiSettings(auth="token", tokens=TOKENS))
    with TestClient(app, headers={"X-Auth-Token": "admin"}) as client:
        yield client


def conductor_sync(database_url: str, report: HardwareList) -> None:
    """A sync written the way a conductor process writes it, through its own engine."""
    engine = make_engine(database_url)
    try:
        store_inventory(session_factory(engine), "node1", report, T1, T1, T1)
    finally:
        engine.dispose()


def test_a_conductor_write_is_in_the_next_answer(
    api: TestClient, database_url: str, found: HardwareList
) -> None:
    gone = str(found.hardware[0].uuid)
    kept = str(found.hardware[1].uuid)
    assert len(api.get("/v2/devices").json()["devices"]) == 10
    assert api.get(f"/v2/devices/{gone}").status_code == 200
    before = len(api.get("/v2/deployables").json()["deployables"])
    # Asked twice, so the second answer comes from the cache.
    assert api.get("/v2/devices").json() == api.get("/v2/devices").json()

    conductor_sync(database_url, found.model_copy(update={"hardware": found.hardware[1:]}))
    listed = {d["uuid"] for d in api.get("/v2/devices").json()["devices"]}
    assert gone not in listed and kept in listed and len(listed) == 9
    assert api.get(f"/v2/devices/{gone}").status_code == 404
    assert len(api.get("/v2/deployables").json()["deployables"]) < before

    # A write by any code path, here a plain ORM update from another engine.
    assert api.get(f"/v2/devices/{kept}", headers=MV23).json()["status"] == DeviceStatus.ENABLED
    engine = make_engine(database_url)
    try:
        with session_factory(engine).begin() as session:
            session.execute(
                update(Device).where(Device.uuid == kept).values(status=DeviceStatus.MAINTAINING)
            )
    finally:
        engine.dispose()
    assert api.get(f"/v2/devices/{kept}", headers=MV23).json()["status"] == DeviceStatus.MAINTAINING
    statuses = {
        d["uuid"]: d["status"] for d in api.get("/v2/devices", headers=MV23).json()["devices"]
    }
    assert statuses[kept] == DeviceStatus.MAINTAINING


def test_the_apis_own_writes_are_in_the_next_answer(api: TestClient) -> None:
    deployable = api.get("/v2/deployables").json()["deployables"][0]
    attribute = api.post(
        "/v2/attributes",
        json={"deployable_id": 1, "key": "colour", "value": "red"},
    ).json()
    assert api.get("/v2/deployables").json()["deployables"][0]["uuid"] == deployable["uuid"]
    assert (
        '{"colour": "red"}'
        in api.get("/v2/deployables").json()["deployables"][0]["attributes_list"]
    )
    assert api.delete(f"/v2/attributes/{attribute['uuid']}").status_code == 204
    assert "colour" not in api.get("/v2/deployables").json()["deployables"][0]["attributes_list"]


def test_conditional_gets(api: TestClient, database_url: str, found: HardwareList) -> None:
    uuid = str(found.hardware[3].uuid)
    first = api.get("/v2/devices")
    etag = first.headers["ETag"]
    again = api.get("/v2/devices", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    # Several If-None-Match lines are one list (RFC 9110 5.3).
    split = api.get("/v2/devices", headers=[("If-None-Match", '"x"'), ("If-None-Match", etag)])
    assert split.status_code == 304
    one = api.get(f"/v2/devices/{uuid}")
    one_etag = one.headers["ETag"]
    assert one_etag != etag
    assert (
        api.get(f"/v2/devices/{uuid}", headers={"If-None-Match": f"W/{one_etag}"}).status_code
        == 304
    )

    # A heartbeat writes to the database but changes nothing the lists show.
    engine = make_engine(database_url)
    try:
        record_hello(session_factory(engine), "node1", "127.0.0.1:6671", "1.1", T1)
    finally:
        engine.dispose()
    assert api.get("/v2/devices", headers={"If-None-Match": etag}).status_code == 304

    # Another device vanishing changes the list, not this device's own answer.
    conductor_sync(database_url, found.model_copy(update={"hardware": found.hardware[1:]}))
    changed = api.get("/v2/devices", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert len(changed.json()["devices"]) == 9
    assert api.get(f"/v2/devices/{uuid}", headers={"If-None-Match": one_etag}).status_code == 304


def test_answers_that_differ_are_never_shared(api: TestClient, found: HardwareList) -> None:
    uuid = str(found.hardware[0].uuid)
    # Microversions: status only from 2.3, whichever was asked first.
    assert "status" in api.get("/v2/devices", headers=MV23).json()["devices"][0]
    assert "status" not in api.get("/v2/devices").json()["devices"][0]
    assert "status" in api.get(f"/v2/devices/{uuid}", headers=MV23).json()
    assert "status" not in api.get(f"/v2/devices/{uuid}").json()
    # Filters.
    assert len(api.get("/v2/devices", params={"type": "GPU"}).json()["devices"]) == 4
    assert len(api.get("/v2/devices", params={"type": "QAT"}).json()["devices"]) == 2
    assert len(api.get("/v2/devices").json()["devices"]) == 10
    # The host the links name.
    for host in ("a.example", "b.example"):
        for path in ("/v2/devices", "/v2/deployables"):
            body = api.get(path, headers={"Host": host}).text
            assert f"http://{host}/accelerator/" in body
            assert "a.example" not in body or host == "a.example"
        link = api.get(f"/v2/devices/{uuid}", headers={"Host": host}).json()["links"][0]
        assert link["href"] == f"http://{host}/accelerator/v2/devices/{uuid}"
    # A refused parameter is refused every time, even after a valid answer was cached.
    assert api.get("/v2/devices", params={"colour": "red"}).status_code == 400


def test_roles_are_checked_before_the_cache(api: TestClient, found: HardwareList) -> None:
    uuid = str(found.hardware[0].uuid)
    for path in ("/v2/devices", f"/v2/devices/{uuid}", "/v2/deployables"):
        assert api.get(path).status_code == 200
        assert api.get(path).status_code == 200  # now cached
        assert api.get(path, headers={"X-Auth-Token": "member"}).status_code == 403
        assert api.get(path, headers={"X-Auth-Token": "stranger"}).status_code == 401


def test_the_generation_survives_the_pool_closing_its_connections(database_url: str) -> None:
    """The generation is read on a connection the engine's pool cannot close."""
    engine = make_engine(database_url)
    app = create_app(engine, ApiSettings(auth="token", tokens=TOKENS))
    with TestClient(app, headers={"X-Auth-Token": "admin"}) as client:
        assert client.get("/v2/devices").status_code == 200
        engine.pool.dispose()  # as the pool does with surplus connections under load
        assert client.get("/v2/devices").status_code == 200
        assert client.get("/v2/devices").status_code == 200


def test_a_cached_answer_is_labelled_with_the_microversion_asked_for(
    api: TestClient, found: HardwareList
) -> None:
    uuid = str(found.hardware[0].uuid)
    for headers, spoken in (({}, "accelerator 2.0"), (MV23, "accelerator 2.3")):
        for _ in range(2):  # rendered, then answered from the cache
            response = api.get(f"/v2/devices/{uuid}", headers=headers)
            assert response.headers["OpenStack-API-Version"] == spoken
            assert response.headers.get_list("Vary") == ["OpenStack-API-Version"]
            assert response.headers["OpenStack-API-Maximum-Version"] == "2.3"
