"""OpenStack's own clients, unchanged, against accel: openstacksdk and the openstack CLI.

Auth type ``none`` with an endpoint override, as against a standalone Cyborg. The
CLI's ``arq bind`` resolves the server through Nova, which is not here, so binds go
through openstacksdk, as Nova's own code does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openstack
import pytest

from accel.driver.fake_sysfs import FakeSysfs
from tests.integration.fleet import FAST_AGENT, FAST_CONDUCTOR, FAST_DRIVER, wait_for_devices
from tests.processes import Cluster, Service

OPENSTACK = str(Path(sys.executable).parent / "openstack")


@pytest.fixture
def gpu_node(cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs) -> Iterator[Service]:
    conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    cluster.driver("GPU", agent, gpu_server.root, **FAST_DRIVER)
    wait_for_devices(api, 4, cluster.logs())
    yield api


def rp_uuids(api: Service) -> dict[str, str]:
    found = httpx.get(api.url + "/v2/deployables", timeout=10).json()["deployables"]
    return {d["name"]: d["rp_uuid"] for d in found}


def test_openstacksdk_lists_creates_binds_unbinds_and_deletes(gpu_node: Service) -> None:
    conn = openstack.connection.Connection(
        auth_type="none",
        accelerator_endpoint_override=gpu_node.url + "/v2",
        accelerator_api_version="2",
    )
    accelerator: Any = conn.accelerator
    assert {d.type for d in accelerator.devices()} == {"GPU"}
    assert len(list(accelerator.deployables())) == 4
    profile = accelerator.create_device_profile(
        name="sdk-gpu", groups=[{"resources:PGPU": "1", "trait:CUSTOM_GPU_NVIDIA": "required"}]
    )
    assert [p.name for p in accelerator.device_profiles()] == ["sdk-gpu"]
    arq = accelerator.create_accelerator_request(device_profile_name="sdk-gpu")
    assert arq.state == "Initial"

    instance = str(uuid.uuid4())
    accelerator.update_accelerator_request(
        arq.id,
        [
            {"op": "add", "path": "/hostname", "value": "node1"},
            {
                "op": "add",
                "path": "/device_rp_uuid",
                "value": rp_uuids(gpu_node)["node1_0000:31:00.0"],
            },
            {"op": "add", "path": "/instance_uuid", "value": instance},
        ],
    )
    bound = accelerator.get_accelerator_request(arq.id)
    assert (bound.state, bound.attach_handle_type, bound.instance_uuid) == (
        "Bound",
        "PCI",
        instance,
    )
    assert bound.attach_handle_info == {
        "domain": "0000",
        "bus": "31",
        "device": "00",
        "function": "0",
    }
    accelerator.update_accelerator_request(
        arq.id,
        [
            {"op": "remove", "path": "/hostname"},
            {"op": "remove", "path": "/device_rp_uuid"},
            {"op": "remove", "path": "/instance_uuid"},
        ],
    )
    assert accelerator.get_accelerator_request(arq.id).state == "Unbound"
    accelerator.delete_accelerator_request(arq.id)
    accelerator.delete_device_profile(profile.id)
    assert list(accelerator.accelerator_requests()) == []
    assert list(accelerator.device_profiles()) == []


def openstack_cli(api: Service, *args: str) -> Any:
    environment = {**os.environ, "OS_AUTH_TYPE": "none", "OS_ENDPOINT": api.url + "/accelerator/v2"}
    result = subprocess.run(
        [OPENSTACK, "accelerator", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if "json" in args else result.stdout


def test_the_openstack_cli_manages_profiles_and_requests(gpu_node: Service) -> None:
    devices = openstack_cli(gpu_node, "device", "list", "-f", "json")
    assert len(devices) == 4 and {d["type"] for d in devices} == {"GPU"}
    assert len(openstack_cli(gpu_node, "deployable", "list", "-f", "json")) == 4
    created = openstack_cli(
        gpu_node,
        "device",
        "profile",
        "create",
        "--group",
        "resources:PGPU=1,trait:CUSTOM_GPU_NVIDIA=required",
        "cli-gpu",
        "-f",
        "json",
    )
    assert created["groups"] == [{"resources:PGPU": "1", "trait:CUSTOM_GPU_NVIDIA": "required"}]
    arq = openstack_cli(gpu_node, "arq", "create", "cli-gpu", "-f", "json")
    shown = openstack_cli(gpu_node, "arq", "show", arq["uuid"], "-f", "json")
    assert (shown["state"], shown["device_profile_name"]) == ("Initial", "cli-gpu")
    openstack_cli(gpu_node, "arq", "delete", arq["uuid"])
    openstack_cli(gpu_node, "device", "profile", "delete", "cli-gpu")
    assert openstack_cli(gpu_node, "arq", "list", "-f", "json") == []
