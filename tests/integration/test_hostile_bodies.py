"""Hostile request bodies against every component's process: JSON nested past any
sensible depth, and bodies that do not say they are JSON. Each is a 4xx with a JSON
body, and nothing is stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from accel.driver.fake_sysfs import build_gpu_server
from tests.integration.fleet import FAST_AGENT, FAST_CONDUCTOR, FAST_DRIVER, get
from tests.processes import TOKEN, Cluster, Service

INTERNAL = {"Authorization": f"Bearer {TOKEN}", "Accel-Internal-Version": "1.3"}
UNKNOWN = "0f5b1c52-1d4e-4f0a-9a53-6b7a3c0d2e11"  # fixed: test ids must not vary
# (component, method, path): every endpoint that reads a body.
BODY_ENDPOINTS = [
    ("api", "POST", "/v2/device_profiles"),
    ("api", "POST", "/v2/accelerator_requests"),
    ("api", "PATCH", "/v2/accelerator_requests"),
    ("api", "PATCH", f"/v2/accelerator_requests/{UNKNOWN}"),
    ("api", "POST", "/v2/attributes"),
    ("api", "POST", f"/v2/devices/{UNKNOWN}/setup"),
    ("api", "PATCH", f"/v2/deployables/{UNKNOWN}/program"),
    ("conductor", "POST", "/v1/hello"),
    ("conductor", "POST", "/v1/accelerator_requests"),
    ("conductor", "POST", "/v1/operations"),
    ("agent", "POST", "/v1/hello"),
    ("agent", "POST", "/v1/setup"),
    ("driver", "POST", "/v1/setup"),
]
DEEP_BODIES = {
    "arrays": b"[" * 1000 + b"]" * 1000,
    "objects": b'{"a":' * 1000 + b"1" + b"}" * 1000,
    "in-a-field": b'{"name": "p", "groups": ' + b"[" * 1000 + b"]" * 1000 + b"}",
}
PROFILE = b'[{"name": "cross-site", "groups": [{"resources:PGPU": "1"}]}]'


@pytest.fixture(scope="module")
def components(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    workdir = Path(tmp_path_factory.mktemp("hostile-bodies"))
    cluster = Cluster(workdir)
    database = f"sqlite:///{workdir / 'accel.db'}"
    try:
        conductor = cluster.conductor(database, **FAST_CONDUCTOR)
        api = cluster.api(database)
        agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
        driver = cluster.driver(
            "GPU", agent, build_gpu_server(workdir / "node").root, **FAST_DRIVER
        )
        yield {"api": api, "conductor": conductor, "agent": agent, "driver": driver}
    finally:
        cluster.stop_all()


def send(
    components: dict[str, Service], where: tuple[str, str, str], body: bytes, content_type: str
) -> httpx.Response:
    component, method, path = where
    headers = {"Content-Type": content_type} if content_type else {}
    if component != "api":
        headers.update(INTERNAL)
    return httpx.request(
        method, components[component].url + path, content=body, headers=headers, timeout=30
    )


@pytest.mark.parametrize("body", DEEP_BODIES.values(), ids=DEEP_BODIES.keys())
@pytest.mark.parametrize("where", BODY_ENDPOINTS, ids=lambda w: f"{w[0]}-{w[1]}-{w[2]}")
def test_json_nested_a_thousand_deep_is_400_with_a_json_body(
    components: dict[str, Service], where: tuple[str, str, str], body: bytes
) -> None:
    response = send(components, where, body, "application/json")
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "nested deeper than" in response.text or "not valid JSON" in response.text


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
@pytest.mark.parametrize("where", BODY_ENDPOINTS, ids=lambda w: f"{w[0]}-{w[1]}-{w[2]}")
def test_a_body_not_labelled_json_is_415_with_a_json_body(
    components: dict[str, Service], where: tuple[str, str, str], content_type: str
) -> None:
    response = send(components, where, PROFILE, content_type)
    assert response.status_code == 415, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "Content-Type" in response.text


@pytest.mark.parametrize(
    ("content_type", "name"),
    [
        ("application/json", "plain"),
        ("application/json; charset=utf-8", "charset"),
        ("Application/JSON;charset=UTF-8", "capitals"),
        ("application/openstack-accelerator+json", "suffix"),
    ],
)
def test_json_content_types_are_taken(
    components: dict[str, Service], content_type: str, name: str
) -> None:
    body = PROFILE.replace(b"cross-site", name.encode())
    response = send(components, ("api", "POST", "/v2/device_profiles"), body, content_type)
    assert response.status_code == 201, response.text


def test_a_cross_site_form_stores_nothing(components: dict[str, Service]) -> None:
    response = send(components, ("api", "POST", "/v2/device_profiles"), PROFILE, "text/plain")
    assert response.status_code == 415
    names = [
        profile["name"]
        for profile in get(components["api"], "/v2/device_profiles")["device_profiles"]
    ]
    assert "cross-site" not in names
