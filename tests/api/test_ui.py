"""The fleet page served in process: what it shows, whom to, and how it is sent.

The browser tests (tests/integration/test_ui_browser.py) drive it in Chromium
against real processes; these check the HTML and headers the api sends.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from accel.api.app import ROUTES, ApiSettings, create_app
from accel.api.auth import Identity, RequestContext
from accel.api.ui import views
from accel.api.ui.model import Condition, device_lines, fleet, health_of
from accel.api.ui.views import CSP
from accel.db.engine import make_engine, session_factory
from accel.db.models import AcceleratorRequest, Device, DeviceProfile
from accel.driver.fake_sysfs import FakeSysfs, build_gpu_server
from accel.states import ArqState, HealthState
from tests.api.test_api import fill

TOKENS = {
    "admin": Identity(user_id="x", project_id="ops", roles=("admin",)),
    "reader": Identity(user_id="r", project_id="p", roles=("reader",)),
}
MARKUP = '<script>window.pwned = 1</script><b onmouseover="x()">bold</b>'
PART = {"Accel-UI-Part": "content"}
ADMIN = {"X-Auth-Token": "admin"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One api for the module: no test here writes."""
    where = tmp_path_factory.mktemp("ui")
    sqlite_url = f"sqlite:///{where / 'accel.db'}"
    fill(sqlite_url, build_gpu_server(where / "node"))
    engine = make_engine(sqlite_url)
    with session_factory(engine).begin() as session:
        # A name is input from the fleet: a driver may report anything.
        session.execute(update(Device).where(Device.type == "QAT").values(model=MARKUP))
    settings = ApiSettings(auth="token", tokens=TOKENS)
    with TestClient(create_app(engine, settings)) as client:
        yield client


class Scripts(HTMLParser):
    """What a strict Content-Security-Policy would refuse: inline scripts, inline
    handlers, inline styles."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.inline.append("<script> without src")
        if tag == "style" or "style" in names:
            self.inline.append(f"inline style on <{tag}>")
        self.inline += [f"{name} on <{tag}>" for name in names if name.startswith("on")]
        self.inline += [f"{name} on <{tag}>" for name in names if name.startswith("hx-on")]


PAGES = ("/ui/", "/ui/devices", "/ui/alarms", "/accelerator/ui/")


@pytest.mark.parametrize("path", PAGES)
def test_every_page_is_sent_with_a_strict_csp_and_nothing_inline(
    client: TestClient, path: str
) -> None:
    response = client.get(path, headers=ADMIN)
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    parser = Scripts()
    parser.feed(response.text)
    assert parser.inline == []


def test_the_page_behind_the_catalog_prefix_links_under_it(client: TestClient) -> None:
    text = client.get("/accelerator/ui/devices?kind=GPU", headers=ADMIN).text
    assert 'hx-get="/accelerator/ui/devices?kind=GPU"' in text
    assert 'data-here="/accelerator/ui/devices?kind=GPU"' in text
    assert 'src="/accelerator/ui/static/htmx-2.0.11.min.js"' in text
    assert 'href="/accelerator/ui/devices/' in text


def test_a_name_with_markup_is_escaped(client: TestClient) -> None:
    text = client.get("/ui/devices", headers=ADMIN).text
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in text
    assert "<script>window" not in text and "<b onmouseover" not in text


def test_without_a_token_the_frame_asks_for_one_and_shows_no_data(client: TestClient) -> None:
    page = client.get("/ui/devices")
    assert page.status_code == 401
    assert page.headers["content-security-policy"] == CSP
    assert 'id="token-form"' in page.text and "node1" not in page.text
    # The content alone (what the page's refresh asks for) is refused outright.
    part = client.get("/ui/devices", headers=PART)
    assert part.status_code == 401 and "node1" not in part.text
    # A wrong token is refused as on the API.
    assert client.get("/ui/", headers={"X-Auth-Token": "nope"}).status_code == 401
    # The page's own files are public: the browser loads them without a token.
    script = client.get("/ui/static/accel-ui.js")
    assert script.status_code == 200 and "X-Auth-Token" in script.text


def test_a_reader_is_refused_what_the_policy_refuses(client: TestClient) -> None:
    for path in ("/ui/", "/ui/devices", "/ui/alarms"):
        response = client.get(path, headers={"X-Auth-Token": "reader", **PART})
        assert response.status_code == 403, path
        assert "node1" not in response.text


def test_the_refresh_gets_the_content_alone_and_304_while_unchanged(client: TestClient) -> None:
    first = client.get("/ui/devices", headers={**ADMIN, **PART})
    assert first.status_code == 200
    assert "<html" not in first.text and 'id="devices"' in first.text
    again = client.get(
        "/ui/devices", headers={**ADMIN, **PART, "If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304
    full = client.get("/ui/devices", headers=ADMIN)
    assert full.headers["etag"] != first.headers["etag"]
    assert "Accel-UI-Part" in full.headers["vary"]


def rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("<tr data-uuid=")]


def test_filters_choose_devices_and_bad_ones_are_400(client: TestClient) -> None:
    every = rows(client.get("/ui/devices", headers=ADMIN).text)
    gpus = rows(client.get("/ui/devices?kind=GPU&node=&state=", headers=ADMIN).text)
    assert 0 < len(gpus) < len(every)
    page = client.get("/ui/devices?kind=GPU", headers=ADMIN).text
    assert "<option selected>GPU</option>" in page
    ready = rows(client.get("/ui/devices?state=ready&health=unknown", headers=ADMIN).text)
    setup = rows(client.get("/ui/devices?state=needs_setup", headers=ADMIN).text)
    assert ready and setup and len(ready) + len(setup) == len(every)
    assert all('data-condition="ready"' in row for row in ready)
    assert rows(client.get("/ui/devices?state=vanished", headers=ADMIN).text) == []
    assert rows(client.get("/ui/devices?node=elsewhere", headers=ADMIN).text) == []
    for bad in ("kind=TPU", "state=broken", "health=meh", "colour=red", "kind=GPU&kind=QAT"):
        response = client.get(f"/ui/devices?{bad}", headers={**ADMIN, **PART})
        assert response.status_code == 400, bad
        assert "faultstring" in response.json()["error_message"]


def test_the_device_page_shows_facts_history_and_refuses_bad_uuids(client: TestClient) -> None:
    device = client.get("/v2/devices?type=GPU", headers=ADMIN).json()["devices"][0]
    page = client.get(f"/ui/devices/{device['uuid']}", headers=ADMIN)
    assert page.status_code == 200
    for fact in ("NUMA node", "Link", "Virtual functions", "appeared", 'id="arqs"'):
        assert fact in page.text
    missing = client.get("/ui/devices/9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", headers=ADMIN)
    assert missing.status_code == 404
    assert client.get("/ui/devices/not-a-uuid", headers=ADMIN).status_code == 400


def test_health_is_unknown_until_a_device_has_some() -> None:
    assert health_of(Device()).state == HealthState.UNKNOWN
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    check = {"first_seen": now.isoformat(), "last_seen": now.isoformat(), "count": 1}
    checks = [
        {**check, "check": "aer_fatal", "severity": "failed", "value": "3"},
        {**check, "check": "link", "severity": "ok", "value": "x16"},
    ]
    device = Device(
        health_state=HealthState.FAILED, health_since=now, health_checks=json.dumps(checks)
    )
    health = health_of(device)
    assert health.state == HealthState.FAILED
    assert health.why == "aer_fatal"
    assert health.since == "2026-12-01T00:00:00+00:00"


def test_the_lists_and_the_roll_up_agree_on_each_backend(
    database_url: str, gpu_server: FakeSysfs
) -> None:
    """The lists read a few fields of the stored report in SQL (JSON on SQLite and
    PostgreSQL alike), and the roll-up counts in SQL: both tell the same."""
    fill(database_url, gpu_server)
    engine = make_engine(database_url)
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    with session_factory(engine).begin() as session:
        gpu, other = session.scalars(select(Device).where(Device.type == "GPU")).all()[:2]
        report = json.loads(gpu.hardware)
        report["pci"]["product_name"] = "Named <card>"
        gpu.hardware = json.dumps(report)
        gpu.health_state, gpu.health_since = HealthState.FAILED, now
        profile = DeviceProfile(name="gpu", profile_json="{}")
        session.add(profile)
        session.flush()
        session.add(
            AcceleratorRequest(
                project_id="ops",
                state=ArqState.BOUND,
                device_profile_id=profile.id,
                device_profile_group_id=0,
                deployable_id=other.deployables[0].id,
                instance_uuid="1e3a5c7e-9b0d-4f2a-8c6e-0a2c4e6a8c0e",
                created_at=now,
            )
        )
        failed, in_use = gpu.uuid, other.uuid
    admin = RequestContext(Identity(user_id="x", project_id="ops", roles=("admin",)))
    stranger = RequestContext(Identity(user_id="y", project_id="elsewhere", roles=("manager",)))
    with session_factory(engine)() as session:
        lines = {line.uuid: line for line in device_lines(session, admin)}
        counts = fleet(session, admin).totals
        strangers = {line.uuid: line for line in device_lines(session, stranger)}
        strangers_counts = fleet(session, stranger).totals
    engine.dispose()
    assert lines[failed].model == "Named <card>"
    assert lines[failed].health.state == HealthState.FAILED
    assert lines[failed].condition == Condition.UNHEALTHY
    assert lines[in_use].instances == ("1e3a5c7e-9b0d-4f2a-8c6e-0a2c4e6a8c0e",)
    assert lines[in_use].condition == Condition.IN_USE
    others = [line for uuid, line in lines.items() if uuid != failed]
    assert others and all(line.health.state == HealthState.UNKNOWN for line in others)
    assert counts == Counter(line.condition for line in lines.values())
    assert counts[Condition.IN_USE] == 1 and counts[Condition.UNHEALTHY] == 1
    # Another project's caller is not shown whose instance holds the device.
    assert strangers[in_use].instances == () and strangers_counts[Condition.IN_USE] == 0
    assert strangers_counts == Counter(line.condition for line in strangers.values())


def test_the_device_table_shows_its_first_rows_and_says_how_many_match(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "ROWS_SHOWN", 3)
    page = client.get("/ui/devices", headers=ADMIN).text
    assert len(rows(page)) == 3
    every = client.get("/v2/hardware?state=all", headers=ADMIN).json()["hardware"]
    assert f"Showing the first 3 of {len(every)}" in page
    assert 'id="more"' not in client.get("/ui/devices?kind=FPGA", headers=ADMIN).text


def test_openapi_lists_every_view_of_the_route_table_as_html(client: TestClient) -> None:
    served = client.get("/openapi.json").json()["paths"]
    views_in_table = {route.path for route in ROUTES if isinstance(route, views.Page)}
    assert views_in_table == {"/ui", "/ui/devices", "/ui/devices/{uuid}", "/ui/alarms"}
    assert {path for path in served if path.startswith("/ui")} == views_in_table
    for path in views_in_table:
        answers = served[path]["get"]["responses"]
        assert list(answers["200"]["content"]) == ["text/html"], path
        assert "304" in answers and "text/html" in answers["401"]["content"]
        assert "application/json" in answers["400"]["content"]
    filters = {p["name"] for p in served["/ui/devices"]["get"]["parameters"] if p["in"] == "query"}
    assert filters == {"node", "kind", "state", "health"}
    [uuid] = served["/ui/devices/{uuid}"]["get"]["parameters"][:1]
    assert uuid["in"] == "path" and uuid["name"] == "uuid"
    # The API's own paths are still there.
    assert "/v2/devices" in served and "/healthz" in served
