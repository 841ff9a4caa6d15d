"""The JSON examples in docs/api.md have exactly the fields the server answers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from accel.api.app import ApiSettings, create_app
from accel.api.auth import Identity
from accel.db.engine import make_engine
from accel.driver.fake_sysfs import FakeSysfs
from tests.api.test_api import fill

DOCS = Path(__file__).parents[2] / "docs" / "api.md"
EXAMPLE = re.compile(r"<!-- example: (GET \S+) -->\n```json\n(.*?)\n```", re.DOTALL)
EXAMPLES = EXAMPLE.findall(DOCS.read_text())


def shape(value: Any) -> Any:
    """The fields at every level, not the values (uuids and times differ)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


def test_the_docs_have_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize(("request_line", "example"), EXAMPLES, ids=[line for line, _ in EXAMPLES])
def test_an_example_matches_the_answer(
    sqlite_url: str, gpu_server: FakeSysfs, request_line: str, example: str
) -> None:
    fill(sqlite_url, gpu_server)
    tokens = {
        "alice": Identity(user_id="alice", project_id="project-a", roles=("member", "manager")),
        "admin": Identity(user_id="admin", project_id="ops", roles=("admin",)),
    }
    app = create_app(make_engine(sqlite_url), ApiSettings(auth="token", tokens=tokens))
    headers = {"X-Auth-Token": "alice", "OpenStack-API-Version": "accelerator 2.3"}
    profile = {
        "name": "gpu-1",
        "description": "one NVIDIA GPU",
        "groups": [{"resources:PGPU": "1", "trait:CUSTOM_GPU_NVIDIA": "required"}],
    }
    with TestClient(app) as client:
        created = client.post(
            "/v2/device_profiles", json=[profile], headers={**headers, "X-Auth-Token": "admin"}
        )
        assert created.status_code == 201
        client.post(
            "/v2/accelerator_requests", headers=headers, json={"device_profile_name": "gpu-1"}
        )
        answer = client.get(request_line.split()[1], headers=headers)
    assert answer.status_code == 200, answer.text
    assert shape(json.loads(example)) == shape(answer.json())
