"""The fleet page's refresh: 304 without reading or rendering the fleet while nothing
it shows changed, and a new answer as soon as something did (accel.api.ui.freshness).

The writes are the conductor's own functions on the api's database, one module
stack; the steps run in order in one test because each builds on the last.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from accel.api.app import ApiSettings, create_app
from accel.api.auth import Identity
from accel.api.policy import RULES
from accel.api.ui import model, views
from accel.conductor.agents import mark_silent_agents_down, record_hello
from accel.conductor.alarms import clear_alarm, raise_alarm
from accel.db.engine import make_engine, session_factory
from accel.db.models import AcceleratorRequest, Device, DeviceProfile
from accel.driver.fake_sysfs import build_gpu_server
from accel.states import AlarmKind, ArqState
from tests.api.test_api import T0, fill

TOKENS = {
    "admin": Identity(user_id="x", project_id="ops", roles=("admin",)),
    "other-admin": Identity(user_id="y", project_id="elsewhere", roles=("admin",)),
}
PART = {"Accel-UI-Part": "content", "X-Auth-Token": "admin"}


class Tab:
    """An open tab's refresh of one view: the ETag it holds, and what came back."""

    def __init__(self, client: TestClient, path: str) -> None:
        self.client, self.path = client, path
        first = client.get(path, headers=PART)
        assert first.status_code == 200, first.text
        self.etag = first.headers["etag"]
        self.text = first.text

    def refresh(self, **headers: str) -> int:
        answer = self.client.get(self.path, headers={**PART, **headers, "If-None-Match": self.etag})
        assert answer.headers["etag"], "a 304 names the ETag too"
        if answer.status_code == 200:
            self.etag, self.text = answer.headers["etag"], answer.text
        status: int = answer.status_code
        return status


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, sessionmaker[Session], Engine]]:
    """One api per backend: the side stamp's aggregates are SQL of each dialect."""
    where = tmp_path_factory.mktemp("ui-fresh")
    url = f"sqlite:///{where / 'accel.db'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").new_database()
    fill(url, build_gpu_server(where / "node"))
    engine = make_engine(url)
    with TestClient(create_app(engine, ApiSettings(auth="token", tokens=TOKENS))) as client:
        yield client, session_factory(engine), engine
    engine.dispose()


def _refused(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("an unchanged view was read or rendered")


def test_an_unchanged_view_is_304_unread_and_each_change_shows(
    stack: tuple[TestClient, sessionmaker[Session], Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, sessions, _ = stack
    fleet, devices, alarms = (Tab(client, path) for path in ("/ui/", "/ui/devices", "/ui/alarms"))
    device = client.get("/v2/devices?type=GPU", headers=PART).json()["devices"][0]["uuid"]
    one = Tab(client, f"/ui/devices/{device}")
    tabs = (fleet, devices, alarms, one)

    with monkeypatch.context() as patched:
        # Neither the fleet's queries nor a template may run for a 304.
        for name in ("fleet", "device_lines", "alarm_lines", "device_report"):
            patched.setattr(model, name, _refused)
        patched.setattr(views.templates, "get_template", _refused)
        assert [tab.refresh() for tab in tabs] == [304] * 4
        # A heartbeat moves last_seen: nothing the page shows.
        record_hello(sessions, "node1", "127.0.0.1:6671", "1.1", T0 + dt.timedelta(seconds=5))
        assert [tab.refresh() for tab in tabs] == [304] * 4

    # Another caller (other project: other instances shown) never gets this one's 304.
    assert fleet.refresh(**{"X-Auth-Token": "other-admin"}) == 200
    fleet.refresh()

    now = T0 + dt.timedelta(minutes=1)
    with sessions.begin() as session:
        raise_alarm(session, AlarmKind.HARDWARE_UNHEALTHY, device, "it broke", now)
    assert [tab.refresh() for tab in tabs] == [200] * 4
    assert 'data-total="alarms">1<' in fleet.text and "it broke" in alarms.text
    with sessions.begin() as session:
        clear_alarm(session, AlarmKind.HARDWARE_UNHEALTHY, device, now)
    assert alarms.refresh() == 200 and "it broke" not in alarms.text

    # The agent goes DOWN: its row says so, with when it was last heard.
    assert mark_silent_agents_down(sessions, now + dt.timedelta(hours=1), 60) == ["node1"]
    assert fleet.refresh() == 200 and "DOWN" in fleet.text

    # A bind: the device is in use, by the instance named.
    instance = "1e3a5c7e-9b0d-4f2a-8c6e-0a2c4e6a8c0e"
    with sessions.begin() as session:
        target = session.scalars(select(Device).where(Device.uuid == device)).one()
        profile = DeviceProfile(name="gpu", profile_json="{}")
        session.add(profile)
        session.flush()
        session.add(
            AcceleratorRequest(
                project_id="ops",
                state=ArqState.BOUND,
                device_profile_id=profile.id,
                device_profile_group_id=0,
                deployable_id=target.deployables[0].id,
                instance_uuid=instance,
                created_at=now,
            )
        )
    assert devices.refresh() == 200 and instance in devices.text
    assert one.refresh() == 200 and instance in one.text

    # The inventory: the device vanishes (the generation moves).
    with sessions.begin() as session:
        session.execute(update(Device).where(Device.uuid == device).values(present=False))
    assert [tab.refresh() for tab in tabs] == [200] * 4
    assert 'data-condition="vanished"' in devices.text
    assert [tab.refresh() for tab in tabs] == [304] * 4


def test_another_policy_is_another_etag(
    stack: tuple[TestClient, sessionmaker[Session], Engine],
) -> None:
    """An api whose --policy-file hides the requests from the same caller shows the
    device page without them: never the 304 of an api that shows them."""
    client, _, engine = stack
    device = client.get("/v2/devices?type=GPU", headers=PART).json()["devices"][0]["uuid"]
    path = f"/ui/devices/{device}"
    shown = Tab(client, path)
    hidden = {**RULES, "cyborg:arq:get_all": frozenset({"role:manager"})}
    settings = ApiSettings(auth="token", tokens=TOKENS, policy=hidden)
    with TestClient(create_app(engine, settings)) as other:
        assert Tab(other, path).etag != shown.etag
        shown.client = other
        assert shown.refresh() == 200 and 'id="arqs"' not in shown.text
