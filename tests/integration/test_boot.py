"""One boot, end to end, with the real services: Placement 16, Nova 34's own code
(its scheduler's query and its Cyborg client) and accel's processes; the test plays
nova-compute and the scheduler's claim, and a recording server plays Nova's API.

nova-compute's part: the compute node's provider with VCPU, MEMORY_MB, DISK_GB and
COMPUTE_ACCELERATORS. accel reports the node's GPUs under it. Nova's code asks
Placement for candidates for a flavor with ``accel:device_profile``; the test claims
the first as the scheduler does, Nova's client creates the ARQs on the provider the
candidate mapped, binds them (service token), and Nova hears the bind. Then the GPU
vanishes while the allocation holds it, the allocation goes, the GPU comes back and
is disabled: Placement follows each time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from accel.driver.fake_sysfs import FakeSysfs
from tests.integration.fleet import FAST_AGENT, FAST_CONDUCTOR, FAST_DRIVER
from tests.integration.nova_recorder import nova_recorder
from tests.nova_code.test_nova_code import ADMIN, TOKENS, nova_conf, nova_python
from tests.placement_service import TOKEN, ThrowawayPlacement, children, make_root
from tests.processes import Cluster, Service, wait_until

PROFILE = {"resources:PGPU": "1", "trait:CUSTOM_GPU_NVIDIA": "required"}
COMPUTE = {"VCPU": 16, "MEMORY_MB": 32768, "DISK_GB": 200}


def subprocess_run(python: Path, script: str, plan: dict[str, Any]) -> dict[str, Any]:
    """Runs one of tests/nova_code/'s scripts in Nova's venv."""
    done = subprocess.run(
        [str(python), str(Path(__file__).parents[1] / "nova_code" / script)],
        input=json.dumps({"user_token": "alice-token", "project": "demo", **plan}),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def give_compute_inventory(placement: ThrowawayPlacement, root: str) -> None:
    with placement.client() as client:
        generation = client.get(f"/resource_providers/{root}").json()["generation"]
        inventories = {rc: {"total": total, "max_unit": total} for rc, total in COMPUTE.items()}
        answer = client.put(
            f"/resource_providers/{root}/inventories",
            json={"resource_provider_generation": generation, "inventories": inventories},
        )
        assert answer.status_code == 200, answer.text


def test_a_server_boots_with_a_gpu_from_accel(
    cluster: Cluster,
    placement: ThrowawayPlacement,
    gpu_server: FakeSysfs,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    python = nova_python()
    if python is None:
        pytest.skip("no Nova code here (scripts/ensure-nova-client installs it)")
    node = f"boot-{uuid.uuid4().hex[:8]}"
    root = make_root(placement, node)
    give_compute_inventory(placement, root)
    token, tokens = tmp_path / "openstack-token", tmp_path / "tokens.json"
    token.write_text(TOKEN)
    tokens.write_text(json.dumps(TOKENS))
    with nova_recorder() as nova:
        conductor = cluster.conductor(
            sqlite_url,
            placement_url=placement.url,
            openstack_token_file=token,
            nova_url=nova.url,
            **FAST_CONDUCTOR,
        )
        agent = cluster.agent([conductor.url], node, **FAST_AGENT)
        cluster.driver("GPU", agent, gpu_server.root, **FAST_DRIVER)
        api = cluster.api(sqlite_url, auth="token", auth_tokens_file=tokens)

        def tree_of(count: int) -> dict[str, dict[str, Any]] | None:
            tree = children(placement, root)
            return tree if len(tree) == count else None

        tree = wait_until(lambda: tree_of(4), "4 GPUs in Placement", on_timeout=cluster.logs)
        admin = {"X-Auth-Token": ADMIN}
        for profile, groups in {
            "gpu": [PROFILE],
            "gpu-and-qat": [PROFILE, {"resources:CUSTOM_QAT": "2"}],
        }.items():
            made = httpx.post(
                api.url + "/v2/device_profiles",
                json=[{"name": profile, "groups": groups}],
                headers=admin,
                timeout=30,
            )
            assert made.status_code == 201, made.text

        # nova-scheduler: Nova's own query to Placement, and the claim of a candidate.
        conf = str(nova_conf(tmp_path, api, service_token=True, placement=placement.url))
        plan = {"conf": conf, "profile": "gpu", "vcpus": 2, "memory_mb": 1024, "disk_gb": 10}
        plan["placement"] = True
        plan["also"] = ["gpu-and-qat"]
        scheduled = subprocess_run(python, "scheduler_query.py", plan)
        assert scheduled["version"] == "1.36"
        # One request group per profile group, each its own numbered suffix.
        assert parse_qs(scheduled["also"]["gpu-and-qat"]) == {
            "group_policy": ["none"],
            "limit": ["1000"],
            "requireddevice_profile_0": ["CUSTOM_GPU_NVIDIA"],
            "resources": ["DISK_GB:10,MEMORY_MB:1024,VCPU:2"],
            "resourcesdevice_profile_0": ["PGPU:1"],
            "resourcesdevice_profile_1": ["CUSTOM_QAT:2"],
            "root_required": ["COMPUTE_ACCELERATORS"],
        }
        candidates = scheduled["allocation_requests"]
        nvidia = {name for name, child in tree.items() if "CUSTOM_GPU_NVIDIA" in child["traits"]}
        assert len(candidates) == len(nvidia) >= 1
        chosen = candidates[0]
        assert chosen["mappings"][""] == [root]
        [provider] = chosen["mappings"]["device_profile_0"]
        [name] = [n for n, child in tree.items() if child["uuid"] == provider]
        instance = str(uuid.uuid4())
        with placement.client("1.36") as client:
            claim = {
                "allocations": chosen["allocations"],
                "project_id": str(uuid.uuid4()),
                "user_id": str(uuid.uuid4()),
                "consumer_generation": None,
            }
            answer = client.put(f"/allocations/{instance}", json=claim)
            assert answer.status_code == 204, answer.text

        # nova-conductor and nova-compute: Nova's Cyborg client creates the ARQs on the
        # mapped provider, binds them, waits for them resolved, and (later) deletes them.
        booted = subprocess_run(
            python,
            "cyborg_client.py",
            {
                "conf": conf,
                "profile": "gpu",
                "rg_rp_map": {"device_profile_0": [provider]},
                "hostname": node,
                "instance": instance,
            },
        )
        assert booted["bind"] == "done", booted
        [bound] = booted["resolved"]
        assert (bound["state"], bound["device_rp_uuid"]) == ("Bound", provider)
        handle = bound["attach_handle_info"]
        address = f"{handle['domain']}:{handle['bus']}:{handle['device']}.{handle['function']}"
        assert name == f"{node}_{address}"  # the device under the provider Placement chose
        [event] = wait_until(
            lambda: nova.for_instance(instance) or None, "Nova's event", on_timeout=cluster.logs
        )
        assert event.body["events"] == [
            {
                "name": "accelerator-request-bound",
                "server_uuid": instance,
                "tag": bound["uuid"],
                "status": "completed",
            }
        ]

        follow_the_hardware(placement, cluster, api, gpu_server, root, name, address, instance)


def follow_the_hardware(
    placement: ThrowawayPlacement,
    cluster: Cluster,
    api: Service,
    gpu_server: FakeSysfs,
    root: str,
    name: str,
    address: str,
    instance: str,
) -> None:
    """The GPU the server was given vanishes, the server goes, the GPU comes back and
    is disabled; Placement's tree follows."""

    def child(check: Any) -> bool:
        found = children(placement, root).get(name)
        return bool(check(found))

    folder = gpu_server.device_dir(address)
    link = gpu_server.sys / "bus/pci/devices" / address
    target = os.readlink(link)
    saved = gpu_server.root.parent / "saved-gpu"
    shutil.copytree(folder, saved, symlinks=True)
    gpu_server.remove(address)
    # Its allocation still holds it: kept, and nothing more of it offered.
    wait_until(
        lambda: child(lambda c: c and c["inventories"]["PGPU"]["reserved"] == 1),
        "the held, vanished GPU reserved",
        on_timeout=cluster.logs,
    )
    with placement.client("1.36") as client:
        assert client.delete(f"/allocations/{instance}").status_code == 204
    wait_until(
        lambda: child(lambda c: c is None), "the freed GPU provider gone", on_timeout=cluster.logs
    )
    shutil.copytree(saved, folder, symlinks=True)
    os.symlink(target, link)
    wait_until(
        lambda: child(lambda c: c and c["inventories"]["PGPU"]["reserved"] == 0),
        "the GPU back in Placement",
        on_timeout=cluster.logs,
    )
    admin = {"X-Auth-Token": ADMIN}
    hardware = httpx.get(
        api.url + "/v2/hardware", params={"state": "present"}, headers=admin, timeout=30
    ).json()["hardware"]
    [gpu] = [h for h in hardware if h["pci"]["address"] == address]
    disabled = httpx.post(f"{api.url}/v2/devices/{gpu['uuid']}/disable", headers=admin, timeout=30)
    assert disabled.status_code == 200, disabled.text
    wait_until(
        lambda: child(lambda c: c and c["inventories"]["PGPU"]["reserved"] == 1),
        "the disabled GPU reserved",
        on_timeout=cluster.logs,
    )
