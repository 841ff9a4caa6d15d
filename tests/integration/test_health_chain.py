"""Health through real processes: a driver started with health flags polls its fake
tree, and a change of evidence reaches its agent's hardware answer with a new ETag;
an agent that speaks to an older caller leaves health out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accel.driver.fake_health import healthy, set_link
from accel.driver.fake_sysfs import FakeSysfs
from tests.integration.fleet import FAST_AGENT, FAST_DRIVER
from tests.processes import Cluster, internal_client, run_accel, wait_until

GPU = "0000:17:00.0"


def test_a_narrowed_link_reaches_the_agent_under_the_configured_policy(
    cluster: Cluster, gpu_server: FakeSysfs
) -> None:
    for address in ("0000:17:00.0", "0000:31:00.0", "0000:b1:00.0", "0000:ca:00.0"):
        healthy(gpu_server, address, 0x10DE)
    agent = cluster.agent(["http://127.0.0.1:9"], "node1", **FAST_AGENT)
    cluster.driver(
        "GPU",
        agent,
        gpu_server.root,
        health_interval=0.1,
        health_policy=("link_width=fail",),
        **FAST_DRIVER,
    )

    def discovered(version: str) -> tuple[str, dict[str, Any]]:
        with internal_client(version) as client:
            answer = client.post(f"{agent.url}/v1/discovery?wait=10")
        assert answer.status_code == 200, answer.text
        entries = {e["pci"]["address"]: e for e in answer.json()["hardware"]}
        return answer.headers["etag"], entries[GPU]

    def gpu_state(state: str) -> str | None:
        etag, entry = discovered("1.6")
        return etag if entry["health"]["state"] == state else None

    before = wait_until(lambda: gpu_state("ok"), "the GPU to be ok", on_timeout=cluster.logs)
    assert "health" not in discovered("1.5")[1]
    set_link(gpu_server, GPU, 4)
    after = wait_until(lambda: gpu_state("failed"), "the GPU to fail", on_timeout=cluster.logs)
    assert after != before


def test_the_agents_built_in_drivers_take_its_health_flags(
    cluster: Cluster, gpu_server: FakeSysfs
) -> None:
    """The default layout (accel up) serves the drivers inside the agent: the agent's
    own health flags reach them."""
    for address in ("0000:17:00.0", "0000:31:00.0", "0000:b1:00.0", "0000:ca:00.0"):
        healthy(gpu_server, address, 0x10DE)
    agent = cluster.agent(
        ["http://127.0.0.1:9"],
        "node1",
        drivers="GPU",
        sysfs_root=gpu_server.root,
        health_interval=0.1,
        health_policy=("link_width=fail",),
        **FAST_AGENT,
    )

    def gpu_state() -> str | None:
        with internal_client("1.6") as client:
            answer = client.post(f"{agent.url}/v1/discovery?wait=10")
        entries = {e["pci"]["address"]: e for e in answer.json()["hardware"]}
        return entries[GPU]["health"]["state"] if GPU in entries else None

    wait_until(lambda: gpu_state() == "ok" or None, "the GPU to be ok", on_timeout=cluster.logs)
    set_link(gpu_server, GPU, 4)
    wait_until(lambda: gpu_state() == "failed" or None, "the GPU to fail", on_timeout=cluster.logs)


def test_the_config_files_health_policy_is_checked_at_start(tmp_path: Path) -> None:
    config = tmp_path / "accel.toml"
    config.write_text('[driver]\nhealth-policy = ["link_width=fail", "aer_fatl=latch"]\n')
    result = run_accel(
        "--config",
        str(config),
        "driver",
        "--kind",
        "GPU",
        "--agent",
        "http://127.0.0.1:9",
        "--sysfs-root",
        str(tmp_path),
        env={"ACCEL_INTERNAL_TOKEN": "health-cli-test-token-0123456789"},
    )
    assert result.returncode == 2
    assert "unknown health check 'aer_fatl'" in result.stderr
