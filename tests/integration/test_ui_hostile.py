"""The fleet page's 304 path (api/ui/freshness.view_etag) against a hostile caller, on
a real api process: connections that send nothing or a head a byte at a time,
If-None-Match that is huge, repeated, malformed or another caller's, and requests
from another site. Each ends in bounded time with a clear answer (a 4xx with a JSON
body where the request is refused), and a 304 only for a view the caller may see,
named by an ETag of its own.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from accel.driver.fake_sysfs import build_gpu_server
from accel.http_protocol import WireLimits
from tests.api.test_api import fill
from tests.integration.raw_http import closed_by_peer, connect, exchange
from tests.processes import Cluster, Service

TOKENS = {
    "admin-token": {"user_id": "ops", "project_id": "ops", "roles": ["admin"]},
    "other-admin": {"user_id": "y", "project_id": "elsewhere", "roles": ["admin"]},
    "reader-token": {"user_id": "r", "project_id": "p", "roles": ["reader"]},
}
LIMITS = WireLimits()
CLOSE_DEADLINE = LIMITS.head_timeout + 30  # a safety net, not a speed test
VIEWS = ("/ui/", "/ui/devices")


@dataclass
class Apis:
    token: Service
    noauth: Service


@pytest.fixture(scope="module")
def apis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apis]:
    workdir = tmp_path_factory.mktemp("ui-hostile")
    database = f"sqlite:///{workdir / 'accel.db'}"
    fill(database, build_gpu_server(workdir / "node"))
    tokens = workdir / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    cluster = Cluster(workdir)
    try:
        yield Apis(
            cluster.api(database, auth="token", auth_tokens_file=tokens), cluster.api(database)
        )
    finally:
        cluster.stop_all()


def view(api: Service, path: str, *headers: tuple[str, str]) -> httpx.Response:
    return httpx.get(api.url + path, headers=list(headers), timeout=10.0)


def etag_of(api: Service, path: str, token: str) -> str:
    answer = view(api, path, ("X-Auth-Token", token))
    assert answer.status_code == 200, answer.text
    return answer.headers["etag"]


def error_of(answer: httpx.Response) -> str:
    """The message of the api's (Cyborg's) error body: the answer is JSON."""
    assert answer.headers["content-type"].startswith("application/json"), answer.text
    return str(json.loads(answer.json()["error_message"])["faultstring"])


@pytest.mark.parametrize("path", VIEWS)
def test_if_none_match_of_every_shape_is_judged_as_a_list_of_etags(apis: Apis, path: str) -> None:
    api = apis.token
    admin = ("X-Auth-Token", "admin-token")
    etag = etag_of(api, path, "admin-token")
    others = [f'"{i:024x}"' for i in range(600)]
    matching = {
        "itself": etag,
        "weak": f"W/{etag}",
        "hundreds, it among them": ", ".join([*others[:300], etag, *others[300:]]),
        "any": "*",
    }
    for what, header in matching.items():
        answer = view(api, path, admin, ("If-None-Match", header))
        assert (answer.status_code, answer.content) == (304, b""), what
        assert answer.headers["etag"] == etag, what
    # Several field lines are one list (RFC 9110 5.3): a match on any counts.
    answer = view(api, path, admin, ("If-None-Match", '"nope"'), ("If-None-Match", etag))
    assert answer.status_code == 304
    unmatched = {
        "100 kB of garbage": "x" * 100_000,
        "unbalanced quotes": f'"{etag}',
        "only others": ", ".join(others),
        "its prefix": etag[:-2] + '"',
        "empty": "",
        "weak in lower case": f"w/{etag}",
    }
    for what, header in unmatched.items():
        answer = view(api, path, admin, ("If-None-Match", header))
        assert answer.status_code == 200, what
        assert answer.headers["etag"] == etag and "<html" in answer.text, what


def test_a_head_past_the_limit_is_431_with_a_json_body(apis: Apis) -> None:
    header = b"If-None-Match: " + b'"x", ' * (LIMITS.max_head_bytes // 5) + b"\r\n"
    request = b"GET /ui/ HTTP/1.1\r\nHost: x\r\nX-Auth-Token: admin-token\r\n" + header + b"\r\n"
    answer = exchange(apis.token, request)
    assert answer.status == 431, answer.body
    assert "request head larger than" in json.loads(answer.json()["error_message"])["faultstring"]


def test_no_304_for_a_view_the_caller_may_not_see_or_was_not_shown(apis: Apis) -> None:
    api = apis.token
    for path in VIEWS:
        etag = etag_of(api, path, "admin-token")
        # Another admin, with the first one's ETag: that view, but not as it was shown.
        other = view(api, path, ("X-Auth-Token", "other-admin"), ("If-None-Match", etag))
        assert other.status_code == 200 and other.headers["etag"] != etag
        for header in (etag, "*", other.headers["etag"]):
            refused = view(api, path, ("X-Auth-Token", "reader-token"), ("If-None-Match", header))
            assert refused.status_code == 403, header
            assert "Access was denied" in error_of(refused)
            anonymous = view(api, path, ("If-None-Match", header))
            assert anonymous.status_code == 401 and "etag" not in anonymous.headers
            content = view(api, path, ("Accel-UI-Part", "content"), ("If-None-Match", header))
            assert content.status_code == 401 and "X-Auth-Token" in error_of(content)
            forged = view(api, path, ("X-Auth-Token", "forged"), ("If-None-Match", header))
            assert forged.status_code == 401, header


def test_a_cross_site_conditional_request_is_refused_without_tokens(apis: Apis) -> None:
    foreign = ("Origin", "https://evil.example")
    etag = etag_of(apis.noauth, "/ui/", "anything")
    for header in (etag, "*"):
        answer = view(apis.noauth, "/ui/", foreign, ("If-None-Match", header))
        assert answer.status_code == 403 and "cross-site" in error_of(answer)
        # With tokens a page of another site has none to send (no cookie carries one).
        answer = view(apis.token, "/ui/", foreign, ("If-None-Match", header))
        assert answer.status_code == 401 and "etag" not in answer.headers


def test_silent_and_dripping_conditional_requests_are_closed_and_others_served(
    apis: Apis,
) -> None:
    api = apis.token
    etag = etag_of(api, "/ui/", "admin-token").encode()
    head = (
        b"GET /ui/ HTTP/1.1\r\nHost: x\r\nX-Auth-Token: admin-token\r\nIf-None-Match: "
        + b'"0000", ' * 20
        + etag
        + b"\r\n\r\n"
    )
    stop = threading.Event()
    silent, dripping = connect(api), connect(api)

    def drip() -> None:
        for byte in head:
            if stop.wait(0.1):
                return
            try:
                dripping.sendall(bytes([byte]))
            except OSError:
                return

    dripper = threading.Thread(target=drip)
    dripper.start()
    received = {"silent": bytearray(), "dripping": bytearray()}
    socks = {"silent": silent, "dripping": dripping}
    try:
        deadline = time.monotonic() + CLOSE_DEADLINE
        open_ones = set(socks)
        while open_ones:
            open_ones = {w for w in open_ones if not closed_by_peer(socks[w], received[w])}
            # The page's refreshes are answered meanwhile, 304 while unchanged.
            answer = view(
                api, "/ui/", ("X-Auth-Token", "admin-token"), ("If-None-Match", etag.decode())
            )
            assert answer.status_code == 304
            if time.monotonic() > deadline:
                raise AssertionError(f"still open after {CLOSE_DEADLINE} s: {open_ones}")
            time.sleep(0.5)
    finally:
        stop.set()
        dripper.join(5)
        silent.close()
        dripping.close()
    assert received["silent"] == b""
    refusal = bytes(received["dripping"])
    assert refusal.startswith(b"HTTP/1.1 408") and b"not received within" in refusal, refusal
    assert len(head) > LIMITS.head_timeout / 0.1, "the head outlasts the deadline"
