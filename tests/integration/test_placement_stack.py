"""The whole stack as processes reporting to a real Placement 16: a conductor with
``--placement-url`` follows the hardware as it vanishes, comes back and is disabled,
and ``accel placement status`` says what it reported."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx

from accel.driver.fake_sysfs import FakeSysfs
from tests.integration.fleet import (
    FAST_AGENT,
    FAST_CONDUCTOR,
    FAST_DRIVER,
    hardware,
    wait_for_devices,
)
from tests.placement_service import TOKEN, ThrowawayPlacement, children, make_root
from tests.processes import Cluster, run_accel, wait_until

GPU = "0000:17:00.0"


def test_the_conductor_keeps_placement_in_step_with_the_hardware(
    cluster: Cluster,
    placement: ThrowawayPlacement,
    gpu_server: FakeSysfs,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    node = f"stack-{uuid.uuid4().hex[:8]}"
    root = make_root(placement, node)
    token = tmp_path / "openstack-token"
    token.write_text(TOKEN)
    conductor = cluster.conductor(
        sqlite_url,
        placement_url=placement.url,
        openstack_token_file=token,
        placement_concurrency=2,  # a real conductor takes the flag
        **FAST_CONDUCTOR,
    )
    agent = cluster.agent([conductor.url], node, **FAST_AGENT)
    cluster.driver("GPU", agent, gpu_server.root, **FAST_DRIVER)
    api = cluster.api(sqlite_url)
    wait_for_devices(api, 4, on_timeout=cluster.logs)

    def tree_of(count: int) -> dict[str, dict[str, Any]] | None:
        tree = children(placement, root)
        return tree if len(tree) == count else None

    tree = wait_until(lambda: tree_of(4), "4 GPUs in Placement", on_timeout=cluster.logs)
    assert all(
        child["inventories"]["PGPU"]["reserved"] == 0 and "OWNER_CYBORG" in child["traits"]
        for child in tree.values()
    )

    def status() -> dict[str, Any]:
        result = run_accel("placement", "status", "--json", "--api-url", api.url)
        assert result.returncode == 0, result.stderr
        (entry,) = [n for n in json.loads(result.stdout) if n["node"] == node]
        return dict(entry)

    def reported_whole() -> dict[str, Any] | None:
        entry = status()
        return None if entry["pending"] else entry

    reported = wait_until(reported_whole, "a whole report", on_timeout=cluster.logs)
    assert reported["providers"] == 4 and reported["root_uuid"] == root
    assert reported["last_error"] is None

    # The GPU falls off the bus: its provider goes. It comes back: so does its provider.
    folder, link = gpu_server.device_dir(GPU), gpu_server.sys / "bus/pci/devices" / GPU
    target = os.readlink(link)
    shutil.copytree(folder, tmp_path / "saved", symlinks=True)
    gpu_server.remove(GPU)
    wait_until(lambda: tree_of(3), "the vanished GPU's provider to go", on_timeout=cluster.logs)
    shutil.copytree(tmp_path / "saved", folder, symlinks=True)
    os.symlink(target, link)
    wait_until(lambda: tree_of(4), "the GPU's provider back", on_timeout=cluster.logs)

    # Disabled: still in Placement, but nothing of it offered.
    (gpu,) = [h for h in hardware(api) if h["pci"]["address"] == GPU]
    answer = httpx.post(f"{api.url}/v2/devices/{gpu['uuid']}/disable", timeout=10)
    assert answer.status_code == 200, answer.text
    name = f"{node}_{GPU}"

    def withheld() -> bool:
        tree = children(placement, root)
        return name in tree and tree[name]["inventories"]["PGPU"]["reserved"] == 1

    wait_until(withheld, "the disabled GPU reserved", on_timeout=cluster.logs)
