"""Nova 34's own code against accel, run in Nova's venv (scripts/ensure-nova-client) as
subprocess scripts: its Cyborg client creating, binding (with Nova's service token),
listing and deleting ARQs. Its scheduler's Placement query for a flavor with
``accel:device_profile`` is run by the boot test (tests/integration/test_boot.py),
against a real Placement.

One stack for the module: a conductor, an api taking tokens (a user, Nova's service
user, an admin), and a GPU node.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from accel.driver.fake_sysfs import build_gpu_server
from tests.integration.fleet import FAST_AGENT, FAST_CONDUCTOR, FAST_DRIVER
from tests.processes import Cluster, Service, wait_until

VERSION = "34.0.0"
HERE = Path(__file__).parent
USER, NOVA, ADMIN = "alice-token", "nova-service-token", "admin-token"
TOKENS = {
    USER: {"user_id": "alice", "project_id": "demo", "roles": ["member"]},
    NOVA: {"user_id": "nova", "project_id": "service", "roles": ["service"]},
    ADMIN: {"user_id": "admin", "project_id": "admin", "roles": ["admin"]},
}
GPU = "node1_0000:31:00.0"
GPU_GROUP = {"resources:PGPU": "1", "trait:CUSTOM_GPU_NVIDIA": "required"}


def nova_python() -> Path | None:
    cache = Path(os.environ.get("ACCEL_CACHE") or Path.home() / ".cache" / "accel")
    venv = cache / f"nova-{VERSION}"
    return venv / "bin" / "python" if (venv / ".installed-stamp").exists() else None


def nova_conf(
    folder: Path, api: Service, service_token: bool, placement: str | None = None
) -> Path:
    """nova.conf's Cyborg settings: the endpoint, and Nova's service token (or none);
    with ``placement``, the scheduler's report client's (noauth2's admin token)."""
    path = folder / f"nova-{'service' if service_token else 'user'}.conf"
    text = f"[cyborg]\nendpoint_override = {api.url}/v2\n"
    if service_token:
        text += (
            "[service_user]\nsend_service_user_token = True\nauth_type = admin_token\n"
            f"endpoint = {api.url}/v2\ntoken = {NOVA}\n"
        )
    if placement is not None:
        text += (
            "[placement]\nauth_type = admin_token\ntoken = admin\n"
            f"endpoint = {placement}\nendpoint_override = {placement}\n"
        )
    path.write_text(text)
    return path


@dataclass
class Stack:
    folder: Path
    api: Service
    python: Path
    rps: dict[str, str]

    def run(self, script: str, plan: dict[str, Any]) -> dict[str, Any]:
        done = subprocess.run(
            [str(self.python), str(HERE / script)],
            input=json.dumps({"user_token": USER, "project": "demo", **plan}),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(
            method, self.api.url + path, json=body, headers={"X-Auth-Token": ADMIN}, timeout=30
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    python = nova_python()
    if python is None:
        pytest.skip("no Nova code here (scripts/ensure-nova-client installs it)")
    folder = Path(tmp_path_factory.mktemp("nova-code"))
    tokens = folder / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    database = f"sqlite:///{folder / 'accel.db'}"
    cluster = Cluster(folder)
    try:
        conductor = cluster.conductor(database, **FAST_CONDUCTOR)
        api = cluster.api(database, auth="token", auth_tokens_file=tokens)
        agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
        cluster.driver("GPU", agent, build_gpu_server(folder / "node").root, **FAST_DRIVER)
        stack = Stack(folder, api, python, {})
        admin = {"X-Auth-Token": ADMIN}

        def listed() -> list[dict[str, Any]] | None:
            found: list[dict[str, Any]] = stack.admin("GET", "/v2/deployables").json()[
                "deployables"
            ]
            return found if len(found) == 4 else None

        deployables = wait_until(listed, "4 deployables", on_timeout=cluster.logs)
        stack.rps = {d["name"]: d["rp_uuid"] for d in deployables}
        made = httpx.post(
            api.url + "/v2/device_profiles",
            json=[{"name": "gpu", "groups": [GPU_GROUP]}],
            headers=admin,
            timeout=30,
        )
        assert made.status_code == 201, made.text
        yield stack
    finally:
        cluster.stop_all()


def test_nova_s_cyborg_client_creates_binds_lists_and_deletes(stack: Stack) -> None:
    instance = str(uuid.uuid4())
    got = stack.run(
        "cyborg_client.py",
        {
            "conf": str(nova_conf(stack.folder, stack.api, service_token=True)),
            "profile": "gpu",
            "rg_rp_map": {"device_profile_0": [stack.rps[GPU]]},
            "hostname": "node1",
            "instance": instance,
        },
    )
    assert got["request_groups"] == [
        {
            "requester_id": "device_profile_0",
            "resources": {"PGPU": 1},
            "required_traits": ["CUSTOM_GPU_NVIDIA"],
        }
    ]
    [created] = got["created"]
    assert (created["state"], created["device_rp_uuid"]) == ("Initial", stack.rps[GPU])
    assert got["bind"] == "done"
    [bound] = got["resolved"]
    assert (bound["uuid"], bound["state"], bound["instance_uuid"]) == (
        created["uuid"],
        "Bound",
        instance,
    )
    assert bound["attach_handle_type"] == "PCI"
    assert bound["attach_handle_info"] == {
        "domain": "0000",
        "bus": "31",
        "device": "00",
        "function": "0",
    }
    assert got["by_uuid"]["state"] == "Bound"
    assert got["uuids"] == [created["uuid"]]
    assert got["delete"] == "done"
    # Nova's client treats an instance without ARQs as an error: they are gone.
    assert got["after_delete"]["error"] == "AcceleratorRequestOpFailed"
    assert stack.admin("GET", f"/v2/accelerator_requests/{created['uuid']}").status_code == 404


def test_nova_without_its_service_token_cannot_bind(stack: Stack) -> None:
    instance = str(uuid.uuid4())
    got = stack.run(
        "cyborg_client.py",
        {
            "conf": str(nova_conf(stack.folder, stack.api, service_token=False)),
            "profile": "gpu",
            "rg_rp_map": {"device_profile_0": [stack.rps[GPU]]},
            "hostname": "node1",
            "instance": instance,
        },
    )
    [created] = got["created"]
    assert got["bind"]["error"] == "AcceleratorRequestBindingFailed"
    assert "403" in got["bind"]["message"]
    left = stack.admin("GET", f"/v2/accelerator_requests/{created['uuid']}").json()
    assert (left["state"], left["instance_uuid"]) == ("Initial", None)
    assert stack.admin("DELETE", f"/v2/accelerator_requests/{created['uuid']}").status_code == 204
