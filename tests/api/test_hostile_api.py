"""The public API against a hostile caller: partial deletes, cross-site requests,
redirects built from the Host header, ambiguous queries and leaked internals.

Every refusal is a 4xx with Cyborg's JSON error body and leaves nothing changed.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from accel.api import (
    accelerator_requests,
    conductor_link,
    deployables,
    device_profiles,
    devices,
    fleet,
    operations,
)
from accel.api.app import ApiSettings, create_app
from accel.db.columns import utcnow
from accel.db.engine import make_engine, session_factory
from accel.db.models import AcceleratorRequest, Conductor
from accel.driver.fake_sysfs import FakeSysfs
from accel.states import ArqState
from tests.api.test_api import fill
from tests.api.test_cyborg_resources import (
    GPU_GROUP,
    TOKENS,
    as_,
    fault,
    make_profile,
    nova_for,
)

ARQS = "/v2/accelerator_requests"
FOREIGN = str(uuid.UUID(int=7))


@dataclass
class Api:
    client: TestClient
    database: str

    def arq(self, who: str, profile: str = "gpu") -> str:
        created = self.client.post(ARQS, headers=as_(who), json={"device_profile_name": profile})
        assert created.status_code == 201, created.text
        return str(created.json()["arqs"][0]["uuid"])

    def arqs(self, who: str = "admin") -> set[str]:
        listed = self.client.get(ARQS, headers=as_(who)).json()["arqs"]
        return {arq["uuid"] for arq in listed}

    def mark_bound(self, arq: str, instance: str) -> None:
        """As a conductor leaves a bound request (no handle: nothing to free here)."""
        engine = make_engine(self.database)
        with session_factory(engine).begin() as session:
            session.execute(
                update(AcceleratorRequest)
                .where(AcceleratorRequest.uuid == arq)
                .values(state=ArqState.BOUND, instance_uuid=instance, hostname="node1")
            )
        engine.dispose()


@pytest.fixture
def api(database_url: str, gpu_server: FakeSysfs) -> Iterator[Api]:
    fill(database_url, gpu_server)
    app = create_app(make_engine(database_url), ApiSettings(auth="token", tokens=TOKENS))
    with TestClient(app) as client:
        yield Api(client, database_url)


def is_cyborg_error(response: Any, status: int) -> bool:
    body = json.loads(response.json()["error_message"])
    return response.status_code == status and set(body) == {"faultcode", "faultstring", "debuginfo"}


# --- item 9: a bulk delete is all or nothing ---------------------------------------


def test_a_bulk_delete_naming_an_unknown_or_foreign_request_deletes_nothing(api: Api) -> None:
    make_profile(api.client)
    mine, also_mine, theirs = api.arq("alice"), api.arq("alice"), api.arq("bob")
    for other in (FOREIGN, theirs):
        answer = api.client.delete(
            ARQS, headers=as_("alice"), params={"arqs": f"{mine},{also_mine},{other}"}
        )
        assert is_cyborg_error(answer, 404) and other in fault(answer)
        assert api.arqs() == {mine, also_mine, theirs}
    assert api.client.delete(ARQS, headers=as_("alice"), params={"arqs": mine}).status_code == 204
    assert api.arqs() == {also_mine, theirs}


def test_a_delete_that_needs_a_conductor_it_cannot_reach_deletes_nothing(api: Api) -> None:
    make_profile(api.client)
    instance = str(uuid.uuid4())
    bound, initial = api.arq("alice"), api.arq("alice")
    api.mark_bound(bound, instance)
    # The bound one has an accelerator to free, which only a conductor may do; with none
    # to ask, the unbound one must not go either: a retry would then find it missing.
    answer = api.client.delete(
        ARQS, headers=nova_for("admin"), params={"arqs": f"{initial},{bound}"}
    )
    assert is_cyborg_error(answer, 503)
    assert api.arqs() == {bound, initial}


# --- item 12: noauth refuses cross-site requests ------------------------------------


@pytest.fixture
def noauth(sqlite_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(make_engine(sqlite_url), ApiSettings(auth="noauth"))) as client:
        yield client


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "https://127.0.0.1.evil.example", "file://"]
)
def test_noauth_refuses_requests_from_foreign_origins(noauth: TestClient, origin: str) -> None:
    profile = [{"name": "gpu", "groups": [GPU_GROUP]}]
    refused = noauth.post("/v2/device_profiles", json=profile, headers={"Origin": origin})
    assert is_cyborg_error(refused, 403) and "Origin" in fault(refused)
    assert noauth.get("/v2/device_profiles").json() == {"device_profiles": []}
    assert is_cyborg_error(noauth.get("/v2/devices", headers={"Origin": origin}), 403)


@pytest.mark.parametrize(
    "origin",
    ["http://127.0.0.1:8080", "http://localhost:3000", "http://[::1]:9", "http://testserver"],
)
def test_noauth_admits_loopback_and_its_own_origin(noauth: TestClient, origin: str) -> None:
    profile = [{"name": "gpu", "groups": [GPU_GROUP]}]
    assert (
        noauth.post("/v2/device_profiles", json=profile, headers={"Origin": origin}).status_code
        == 201
    )


# --- item 13: a trailing slash is never a redirect ----------------------------------

COLLECTIONS = sorted(
    {
        route.path
        for module in (
            devices,
            device_profiles,
            deployables,
            accelerator_requests,
            fleet,
            operations,
        )
        for route in module.routes
        if "{" not in route.path
    }
)


@pytest.mark.parametrize("root", ["", "/accelerator"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"])
def test_a_trailing_slash_is_never_a_redirect(api: Api, root: str, method: str) -> None:
    for path in COLLECTIONS:
        answer = api.client.request(
            method,
            f"{root}{path}/",
            headers={**as_("admin"), "Host": "evil.example"},
            follow_redirects=False,
        )
        assert answer.status_code < 300 or answer.status_code >= 400, (path, answer.headers)
        assert "location" not in answer.headers
        if method != "HEAD":
            assert answer.headers["content-type"] == "application/json", (path, answer.text)
        if method == "DELETE":  # Cyborg: DELETE /device_profiles/ is 400 (tempest asserts it)
            assert is_cyborg_error(answer, 400), (path, answer.text)


def test_a_trailing_slash_reads_the_collection(api: Api) -> None:
    make_profile(api.client)
    for root in ("", "/accelerator"):
        for path in ("/v2/devices", "/v2/device_profiles"):
            plain = api.client.get(f"{root}{path}", headers=as_("admin"))
            slashed = api.client.get(f"{root}{path}/", headers=as_("admin"))
            assert slashed.status_code == 200 and slashed.json() == plain.json()


# --- item 15: ambiguous or impossible input -----------------------------------------


@pytest.mark.parametrize(
    "groups",
    [
        [{"resources:PGPU": "1001"}],
        [{"resources:PGPU": "600"}, {"resources:FPGA": "600"}],
        # An Alveo counts twice: its management and its user function.
        [{"resources:FPGA": "501", "trait:CUSTOM_FPGA_XILINX": "required"}],
        [{"resources:PGPU": "9" * 40}],
    ],
)
def test_a_profile_no_request_could_ever_use_is_refused(api: Api, groups: Any) -> None:
    answer = make_profile(api.client, "huge", groups)
    assert is_cyborg_error(answer, 400) and "1000" in fault(answer)
    assert api.client.get("/v2/device_profiles", headers=as_("admin")).json() == {
        "device_profiles": []
    }


@pytest.mark.parametrize(
    "name", ["0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9", "0f1e2d3c4b5a49788695a4b3c2d1e0f9"]
)
def test_a_profile_name_that_reads_as_a_uuid_is_refused(api: Api, name: str) -> None:
    answer = make_profile(api.client, name)
    assert is_cyborg_error(answer, 400) and "UUID" in fault(answer)


@pytest.mark.parametrize(
    ("method", "query"),
    [
        ("GET", "instance=nope"),
        ("DELETE", "instance=nope"),
        ("DELETE", "arqs="),
        ("DELETE", "arqs=,"),
        ("DELETE", f"arqs={FOREIGN},,{FOREIGN}"),
        ("DELETE", f"arqs={FOREIGN}&arqs={FOREIGN}"),
        ("GET", "instance=nope&instance=nope"),
        ("GET", "bind_state=resolved&bind_state=resolved"),
    ],
)
def test_malformed_accelerator_request_queries_are_400(api: Api, method: str, query: str) -> None:
    make_profile(api.client)
    kept = api.arq("alice")
    answer = api.client.request(method, f"{ARQS}?{query}", headers=as_("admin"))
    assert is_cyborg_error(answer, 400), answer.text
    assert api.arqs() == {kept}


@pytest.mark.parametrize(
    "path",
    [
        "/v2/devices?type=GPU&type=FPGA",
        "/v2/deployables?filters=a&filters=b",
        "/v2/device_profiles?name=a&name=b",
        "/v2/device_profiles?name=",
        "/v2/alarms?state=all&state=active",
        "/v2/hardware?node=a&node=a",
    ],
)
def test_duplicated_or_empty_query_parameters_are_400(api: Api, path: str) -> None:
    answer = api.client.get(path, headers=as_("admin"))
    assert is_cyborg_error(answer, 400), answer.text


INTERNALS = re.compile(
    r"validation errors? for|pydantic|input_type|Traceback|sqlalchemy|psycopg"
    r"|\b[A-Z][a-z]+(?:[A-Z][a-z]+)+(?:Error|Exception)?\b"
)


def test_error_texts_name_no_internal_classes(api: Api) -> None:
    make_profile(api.client)
    arq = api.arq("alice")
    ops = [
        {"op": "add", "path": "/hostname", "value": "node1"},
        {"op": "add", "path": "/device_rp_uuid", "value": "not-a-uuid"},
        {"op": "add", "path": "/instance_uuid", "value": "x" * 300},
    ]
    answers = [
        api.client.patch(ARQS, headers=as_("alice"), json={arq: ops}),
        api.client.post(
            f"/v2/devices/{FOREIGN}/setup", headers=as_("admin"), json={"action": "enable_vfs"}
        ),
        api.client.post(
            f"/v2/devices/{FOREIGN}/setup",
            headers=as_("admin"),
            json={"action": "program", "image": 3},
        ),
    ]
    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert not INTERNALS.search(fault(answer)), fault(answer)


def test_a_conductor_that_cannot_be_reached_is_not_described_by_class_names(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The api asks again until its commit budget is spent (10 s) before it answers;
    # what it answers is the point here, not how long it kept asking.
    monkeypatch.setattr(conductor_link, "COMMIT_BUDGET", 1.0)
    engine = make_engine(database_url)
    app = create_app(engine, ApiSettings(auth="token", tokens=TOKENS, internal_token="t" * 32))
    with TestClient(app) as client:
        with session_factory(engine).begin() as session:
            # A closed loopback port: the call fails at once.
            session.add(Conductor(name="c1", endpoint="127.0.0.1:9", last_seen=utcnow()))
        client.post(
            "/v2/device_profiles",
            headers=as_("admin"),
            json=[{"name": "gpu", "groups": [GPU_GROUP]}],
        )
        created = client.post(ARQS, headers=as_("alice"), json={"device_profile_name": "gpu"})
        arq = created.json()["arqs"][0]["uuid"]
        ops = [
            {"op": "add", "path": "/hostname", "value": "node1"},
            {"op": "add", "path": "/device_rp_uuid", "value": FOREIGN},
            {"op": "add", "path": "/instance_uuid", "value": FOREIGN},
        ]
        answer = client.patch(ARQS, headers=nova_for("alice"), json={arq: ops})
        assert is_cyborg_error(answer, 503), answer.text
        assert "127.0.0.1:9" in fault(answer)
        assert not INTERNALS.search(fault(answer)), fault(answer)


def test_head_with_a_matching_etag_is_304(api: Api) -> None:
    device = api.client.get("/v2/devices", headers=as_("admin")).json()["devices"][0]["uuid"]
    for path in ("/v2/devices", f"/v2/devices/{device}", "/v2/deployables"):
        for _ in range(2):  # rendered, then from the cache
            etag = api.client.get(path, headers=as_("admin")).headers["etag"]
            for method in ("HEAD", "GET"):
                answer = api.client.request(
                    method, path, headers={**as_("admin"), "If-None-Match": etag}
                )
                assert answer.status_code == 304, (method, path)
                assert answer.headers["etag"] == etag


# --- item 11: the health check -------------------------------------------------------


def test_the_health_check_needs_no_token_and_says_only_whether_the_database_answers(
    api: Api,
) -> None:
    for path in ("/healthz", "/accelerator/healthz"):
        answer = api.client.get(path)
        assert answer.status_code == 200 and answer.json() == {"database": "ok"}
