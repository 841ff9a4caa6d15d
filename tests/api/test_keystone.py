"""--auth keystone against a small fake Identity service that the test runs on loopback."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from accel.api.app import ApiSettings, create_app
from accel.db.engine import make_engine
from accel.driver.fake_sysfs import FakeSysfs
from tests.api.test_api import fill
from tests.processes import bound_socket, wait_until

KEYSTONE_TOKENS: dict[str, dict[str, Any]] = {
    "admin-token": {
        "user": {"id": "u-admin"},
        "project": {"id": "ops"},
        "roles": [{"name": "admin"}, {"name": "member"}],
    },
    "member-token": {
        "user": {"id": "u-alice"},
        "project": {"id": "project-a"},
        "roles": [{"name": "member"}, {"name": "load-balancer_member"}],
    },
    "nova-token": {
        "user": {"id": "u-nova"},
        "project": {"id": "service"},
        "roles": [{"name": "service"}],
    },
    "domain-token": {
        "user": {"id": "u-dom"},
        "domain": {"id": "default"},
        "roles": [{"name": "admin"}],
    },
}


class FakeIdentity:
    """Identity v3's token validation, and a count of the calls it got."""

    def __init__(self) -> None:
        self.calls = 0
        self.garbage: bytes | None = None  # answered instead, when set
        self.gzip = False  # the answer compressed, whatever the caller accepts
        self.expiring: dict[str, dt.datetime] = {}  # a token's expires_at, when set

    async def validate(self, request: Request) -> Response:
        self.calls += 1
        if self.garbage is not None:
            return Response(self.garbage, media_type="application/json")
        subject = request.headers.get("x-subject-token")
        if subject != request.headers.get("x-auth-token") or subject not in KEYSTONE_TOKENS:
            return JSONResponse({"error": {"code": 404}}, status_code=404)
        expires = self.expiring.get(subject)
        if expires is None:
            return self.answer({"token": KEYSTONE_TOKENS[subject]})
        if dt.datetime.now(dt.UTC) >= expires:  # as Keystone: an expired token is not found
            return JSONResponse({"error": {"code": 404}}, status_code=404)
        document = {**KEYSTONE_TOKENS[subject], "expires_at": expires.isoformat()}
        return JSONResponse({"token": document})

    def answer(self, document: dict[str, Any]) -> Response:
        if not self.gzip:
            return JSONResponse(document)
        body = gzip.compress(json.dumps(document).encode())
        headers = {"Content-Encoding": "gzip"}
        return Response(body, media_type="application/json", headers=headers)


@pytest.fixture
def identity() -> Iterator[tuple[str, FakeIdentity]]:
    fake = FakeIdentity()
    app = Starlette(routes=[Route("/v3/auth/tokens", fake.validate, methods=["GET"])])
    sock = bound_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the fake Identity service")
    host, port = sock.getsockname()
    yield f"http://{host}:{port}", fake
    server.should_exit = True
    thread.join(10)
    sock.close()


def api_with(database_url: str, keystone_url: str) -> TestClient:
    settings = ApiSettings(auth="keystone", keystone_url=keystone_url)
    return TestClient(create_app(make_engine(database_url), settings))


def test_keystone_tokens_become_callers_with_their_roles(
    identity: tuple[str, FakeIdentity], sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    url, fake = identity
    fill(sqlite_url, gpu_server)
    with api_with(sqlite_url, url) as api:
        assert api.get("/v2/devices").status_code == 401
        assert api.get("/v2/devices", headers={"X-Auth-Token": "forged"}).status_code == 401
        assert (
            len(api.get("/v2/devices", headers={"X-Auth-Token": "admin-token"}).json()["devices"])
            == 10
        )
        member = {"X-Auth-Token": "member-token"}
        assert api.get("/v2/devices", headers=member).status_code == 403
        api.post(
            "/v2/device_profiles",
            headers={"X-Auth-Token": "admin-token"},
            json=[{"name": "gpu", "groups": [{"resources:PGPU": "1"}]}],
        )
        [arq] = api.post(
            "/v2/accelerator_requests", headers=member, json={"device_profile_name": "gpu"}
        ).json()["arqs"]
        assert arq["project_id"] == "project-a"
        # A token scoped to a domain, not a project, is no caller for Cyborg's rules.
        assert (
            api.get("/v2/device_profiles", headers={"X-Auth-Token": "domain-token"}).status_code
            == 401
        )
        calls = fake.calls
        for _ in range(5):
            api.get("/v2/device_profiles", headers=member)
        assert fake.calls == calls  # answered from the cache
        # Binding is Nova's: the member's own token is not enough, Nova's service
        # token (validated as any token) is (503: no conductor runs here).
        bind = {
            arq["uuid"]: [
                {"op": "add", "path": "/hostname", "value": "node1"},
                {"op": "add", "path": "/device_rp_uuid", "value": str(uuid.UUID(int=1))},
                {"op": "add", "path": "/instance_uuid", "value": str(uuid.UUID(int=2))},
            ]
        }
        path = "/v2/accelerator_requests"
        assert api.patch(path, headers=member, json=bind).status_code == 403
        as_nova = {**member, "X-Service-Token": "nova-token"}
        assert api.patch(path, headers=as_nova, json=bind).status_code == 503
        forged = {**member, "X-Service-Token": "forged"}
        assert api.patch(path, headers=forged, json=bind).status_code == 401


def test_an_expired_token_is_refused_though_keystone_accepted_it_a_moment_before(
    identity: tuple[str, FakeIdentity], sqlite_url: str
) -> None:
    """The cache keeps an answer cache_seconds (60) at most, and never past the token's
    own expires_at: a token accepted just before it expires is refused once it has,
    as X-Auth-Token and as /metrics' Bearer credential."""
    url, fake = identity
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
    fake.expiring["admin-token"] = expires
    as_header = {"X-Auth-Token": "admin-token"}
    as_bearer = {"Authorization": "Bearer admin-token"}
    with api_with(sqlite_url, url) as api:
        assert api.get("/v2/device_profiles", headers=as_header).status_code == 200
        assert api.get("/metrics", headers=as_bearer).status_code == 200
        for _ in range(100):  # bounded: until the token's expiry has passed
            if dt.datetime.now(dt.UTC) > expires:
                break
            time.sleep(0.05)
        assert api.get("/v2/device_profiles", headers=as_header).status_code == 401
        assert api.get("/metrics", headers=as_bearer).status_code == 401


def test_a_token_longer_than_any_keystone_issues_is_refused_unasked(
    identity: tuple[str, FakeIdentity], sqlite_url: str
) -> None:
    """Neither sent to Keystone nor kept in the cache: forged tokens of a request
    head's size each would otherwise hold their length in the api's memory."""
    url, fake = identity
    with api_with(sqlite_url, url) as api:
        for header in ("X-Auth-Token", "Authorization"):
            value = ("Bearer " if header == "Authorization" else "") + "t" * 100_000
            assert api.get("/metrics", headers={header: value}).status_code == 401
        assert fake.calls == 0


def test_a_compressed_identity_answer_is_503(
    identity: tuple[str, FakeIdentity], sqlite_url: str
) -> None:
    """The api asks for the token document as sent (identity): a gzip answer, which
    would inflate past the size bound before it is counted, is refused unread."""
    url, fake = identity
    fake.gzip = True
    with api_with(sqlite_url, url) as api:
        response = api.get("/v2/device_profiles", headers={"X-Auth-Token": "admin-token"})
    assert response.status_code == 503
    assert "'gzip'" in response.json()["error_message"]


def test_an_unreachable_identity_service_is_503_not_a_hang(sqlite_url: str) -> None:
    sock = bound_socket()
    host, port = sock.getsockname()
    sock.close()  # nothing listens there now: connections are refused
    with api_with(sqlite_url, f"http://{host}:{port}") as api:
        response = api.get("/v2/devices", headers={"X-Auth-Token": "admin-token"})
    assert response.status_code == 503
    assert "Identity service" in response.json()["error_message"]


def test_an_identity_answer_nested_a_thousand_deep_is_503(
    identity: tuple[str, FakeIdentity], sqlite_url: str
) -> None:
    url, fake = identity
    fake.garbage = b'{"token": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    with api_with(sqlite_url, url) as api:
        response = api.get("/v2/devices", headers={"X-Auth-Token": "admin-token"})
    assert response.status_code == 503
    assert "token document accel cannot read" in response.json()["error_message"]


def test_the_identity_services_failures_are_told_without_library_texts(
    sqlite_url: str, identity: tuple[str, FakeIdentity]
) -> None:
    """A 503 tells the caller that the Identity service failed, not httpx's or the JSON
    parser's words ("[Errno 111] Connect call failed", "KeyError: 'token'")."""
    sock = bound_socket()
    host, port = sock.getsockname()
    sock.close()
    url, _ = identity
    garbled = {"garbage-token": {"project": {"id": "p"}, "roles": []}}  # no user
    KEYSTONE_TOKENS.update(garbled)
    try:
        for keystone, token in ((f"http://{host}:{port}", "admin-token"), (url, "garbage-token")):
            with api_with(sqlite_url, keystone) as api:
                response = api.get("/v2/devices", headers={"X-Auth-Token": token})
            assert response.status_code == 503
            message = response.json()["error_message"]
            assert "Identity service" in message
            for library_word in ("Errno", "Connect call", "Error", "'user'", "'token'"):
                assert library_word not in message, message
    finally:
        for key in garbled:
            KEYSTONE_TOKENS.pop(key)
