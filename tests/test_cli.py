"""The accel command line: flags, environment, config file, refusals at start."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from accel.cli.discover import display_name
from accel.driver.fake_health import healthy, set_config, set_link
from accel.driver.fake_sysfs import FakeSysfs
from accel.internal.schemas import (
    AccSpecs,
    AccStatus,
    GpuFacts,
    HardwareEntry,
    Kind,
    PciFunctionFacts,
)
from tests.processes import Cluster, run_accel


def found_addresses(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [entry["pci"]["address"] for entry in json.loads(result.stdout)["hardware"]]


def test_discover_reads_flags_environment_and_config_file(
    tmp_path: Path, gpu_server: FakeSysfs
) -> None:
    by_flag = run_accel(
        "discover", "--sysfs-root", str(gpu_server.root), "--kind", "fpga", "--json"
    )
    assert found_addresses(by_flag) == ["0000:86:00.0"]

    by_env = run_accel(
        "discover", "--kind", "FPGA", "--json", env={"ACCEL_SYSFS_ROOT": str(gpu_server.root)}
    )
    assert found_addresses(by_env) == ["0000:86:00.0"]

    config = tmp_path / "accel.toml"
    config.write_text(f'[discover]\nsysfs-root = "{gpu_server.root}"\n')
    by_file = run_accel("--config", str(config), "discover", "--kind", "FPGA", "--json")
    assert found_addresses(by_file) == ["0000:86:00.0"]

    # The command line beats the environment, which beats the file.
    empty = tmp_path / "empty"
    FakeSysfs(empty)
    assert (
        found_addresses(
            run_accel("--config", str(config), "discover", "--sysfs-root", str(empty), "--json")
        )
        == []
    )
    assert (
        found_addresses(
            run_accel(
                "--config", str(config), "discover", "--json", env={"ACCEL_SYSFS_ROOT": str(empty)}
            )
        )
        == []
    )


def test_a_config_file_with_an_unknown_section_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "accel.toml"
    config.write_text("[conductr]\nresync-interval = 5\n")
    result = run_accel("--config", str(config), "discover")
    assert result.returncode == 2 and "conductr" in result.stderr


def test_internal_services_refuse_to_start_without_a_token(tmp_path: Path) -> None:
    result = run_accel(
        "conductor", "--listen", "127.0.0.1:0", "--database", f"sqlite:///{tmp_path / 'a.db'}"
    )
    assert result.returncode == 2
    assert "ACCEL_INTERNAL_TOKEN" in result.stderr
    short = run_accel(
        "agent", "--conductor", "http://127.0.0.1:1", env={"ACCEL_INTERNAL_TOKEN": "short"}
    )
    assert short.returncode == 2 and "shorter than" in short.stderr


def test_bad_flags_are_named(tmp_path: Path) -> None:
    result = run_accel("driver", "--kind", "TPU", "--agent", "http://127.0.0.1:1")
    assert result.returncode == 2 and "TPU" in result.stderr
    result = run_accel(
        "conductor",
        "--database",
        "mysql://x/y",
        "--listen",
        "127.0.0.1:0",
        env={"ACCEL_INTERNAL_TOKEN": "a-long-enough-token-value"},
    )
    assert result.returncode == 2 and "--database" in result.stderr
    result = run_accel(
        *("conductor", "--listen", "127.0.0.1:³"),  # a digit to str.isdigit, not to int()
        *("--database", f"sqlite:///{tmp_path / 'a.db'}"),
        env={"ACCEL_INTERNAL_TOKEN": "a-long-enough-token-value"},
    )
    assert result.returncode == 2 and "must be HOST:PORT" in result.stderr
    # A name no conductor would take is refused before the agent starts, not at every hello.
    result = run_accel(
        *("agent", "--conductor", "http://127.0.0.1:1", "--name", ".."),
        *("--listen", "127.0.0.1:0"),
        env={"ACCEL_INTERNAL_TOKEN": "a-long-enough-token-value"},
        timeout=30,
    )
    assert result.returncode == 2 and "--name" in result.stderr and "host name" in result.stderr


def test_noauth_will_not_listen_beyond_loopback(tmp_path: Path) -> None:
    result = run_accel(
        "api",
        "--auth",
        "noauth",
        "--listen",
        "0.0.0.0:0",
        "--database",
        f"sqlite:///{tmp_path / 'a.db'}",
    )
    assert result.returncode == 2 and "loopback" in result.stderr


def test_a_component_drains_and_exits_cleanly_on_sigterm(cluster: Cluster, sqlite_url: str) -> None:
    conductor = cluster.conductor(sqlite_url)
    assert conductor.stop() == 0
    assert "Traceback" not in conductor.log_path.read_text()


def test_discover_applies_allow_and_deny_lists(gpu_server: FakeSysfs) -> None:
    root = str(gpu_server.root)
    denied = run_accel(
        "discover", "--sysfs-root", root, "--kind", "GPU", "--json", "--deny", "address=0000:b1:*"
    )
    assert found_addresses(denied) == ["0000:17:00.0", "0000:31:00.0", "0000:ca:00.0"]
    allowed = run_accel("discover", "--sysfs-root", root, "--json", "--allow", "class=0b40")
    assert found_addresses(allowed) == ["0000:6b:00.0", "0000:70:00.0"]
    refused = run_accel("discover", "--sysfs-root", root, "--allow", "nvidia")
    assert refused.returncode == 2 and "nvidia" in refused.stderr


def test_discover_prints_a_table_an_operator_reads(gpu_server: FakeSysfs) -> None:
    table = run_accel(
        "discover",
        "--sysfs-root",
        str(gpu_server.root),
        "--kind",
        "QAT",
        "--node",
        "n1",
        env={"COLUMNS": "200"},
    )
    assert table.returncode == 0, table.stderr
    assert "2 devices under" in table.stdout
    rows = [line for line in table.stdout.splitlines() if "0000:" in line]
    assert "4/16" in rows[0] and "ready" in rows[0]
    assert "0/16" in rows[1] and "setup required" in rows[1]


def test_discover_names_a_gpu_newer_than_the_pci_id_database_by_nvml() -> None:
    pci = PciFunctionFacts(
        address="0000:00:06.0",
        vendor_id="10de",
        product_id="2335",
        class_code="030200",
        vendor_name="NVIDIA Corporation",
    )
    entry = HardwareEntry(
        uuid=uuid.UUID("2bd99ad5-b258-51cd-8c08-9b17abc00982"),
        acc_specs=AccSpecs(remote=0, num=1, device_type=Kind.GPU, acc_capability={"num": 1}),
        acc_status=AccStatus(setup_required=False, reboot_required=False),
        pci=pci,
    )
    assert display_name(entry) == "NVIDIA Corporation 2335"
    named = entry.model_copy(update={"gpu": GpuFacts(name="NVIDIA H200")})
    assert display_name(named) == "NVIDIA H200"
    # Where the database knows the card, its name stands.
    known = named.model_copy(update={"pci": pci.model_copy(update={"product_name": "GH100"})})
    assert display_name(known) == "NVIDIA Corporation GH100"


def test_discover_shows_each_devices_health_with_its_checks(gpu_server: FakeSysfs) -> None:
    qat, other, vf = "0000:6b:00.0", "0000:70:00.0", "0000:6b:00.1"
    for address in (qat, other):
        healthy(gpu_server, address, 0x8086)
    set_link(gpu_server, qat, 8)
    set_config(gpu_server, vf, None)  # this VF no longer answers
    root = str(gpu_server.root)
    listed = run_accel("discover", "--sysfs-root", root, "--kind", "QAT", "--json")
    assert listed.returncode == 0, listed.stderr
    found = {e["pci"]["address"]: e for e in json.loads(listed.stdout)["hardware"]}
    checks = {c["check"]: c for c in found[qat]["health"]["checks"]}
    assert checks["link_width"]["value"] == "x8 of x16"
    assert checks["link_width"]["severity"] == "degraded"
    assert found[other]["health"]["state"] == "ok" and found[other]["health"]["checks"] == []
    [vf_health] = [f["health"] for f in found[qat]["virtual_functions"] if f["address"] == vf]
    assert vf_health["state"] == "failed"
    table = run_accel("discover", "--sysfs-root", root, "--kind", "QAT", env={"COLUMNS": "300"})
    assert table.returncode == 0, table.stderr
    [row] = [line for line in table.stdout.splitlines() if qat in line]
    assert "ok: link_width x8 of x16" in row
    assert f"vf {vf} failed: config_space vendor id ffff" in row
