"""The internal API's bodies: strict on the way in, lenient when read from peers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from accel.internal.endpoints import split_endpoint
from accel.internal.schemas import (
    AgentHello,
    DriverHello,
    HardwareEntry,
    HardwareList,
    Kind,
)


def test_the_seeds_crypto_type_is_qat() -> None:
    hello = DriverHello.model_validate(
        {"status": "READY", "endpoint": "localhost:1337", "type": "CRYPTO"}
    )
    assert hello.type is Kind.QAT


@pytest.mark.parametrize(
    "body",
    [
        {"status": "READY", "endpoint": "localhost:1337"},  # no type
        {"status": "BUSY", "endpoint": "localhost:1337", "type": "GPU"},
        {"status": "READY", "endpoint": "localhost", "type": "GPU"},
        {"status": "READY", "endpoint": "localhost:70000", "type": "GPU"},
        {"status": "READY", "endpoint": "bad host:80", "type": "GPU"},
        {"status": "READY", "endpoint": "localhost:1337", "type": "TPU"},
        {"status": "READY", "endpoint": "localhost:1337", "type": "GPU", "extra": 1},
    ],
)
def test_bad_driver_hellos_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DriverHello.model_validate(body)


def test_agent_hello_names_are_plain() -> None:
    AgentHello.model_validate({"status": "READY", "endpoint": "[::1]:6671", "name": "node-1"})
    with pytest.raises(ValidationError):
        AgentHello.model_validate({"status": "READY", "endpoint": "h:1", "name": "a/../b"})


@pytest.mark.parametrize(
    "endpoint",
    [
        "2130706433:7999",  # 127.0.0.1 as one number
        "127.1:7999",  # as inet_aton's short form
        "0177.0.0.1:7999",  # octal
        "0x7f.0.0.1:7999",  # hexadecimal
        "0x7f000001:7999",
        "127.0.0.01:7999",  # a leading zero
        "1.2.3:7999",
        "example.123:7999",  # an all-numeric top-level label is no hostname
        "[::1%eth0]:7999",  # a zone makes no sense to another host
        "-host:7999",
        "host-.example:7999",
        "a..b:7999",
        ".:7999",
        # Other spellings of an endpoint another hello writes canonically: each was
        # taken, called, and counted as another endpoint than its canonical twin's.
        "127.0.0.1:07999",  # a port with a leading zero
        "127.0.0.1:\uff18\uff10",  # a port in full-width digits (80)
        "127.0.0.1:\u0668\u0660",  # in Arabic-Indic digits (80)
        "[::ffff:127.0.0.1]:7999",  # IPv4 mapped into IPv6
        "[::ffff:7f00:1]:7999",
        "[0:0:0:0:0:0:0:1]:7999",  # IPv6 not in its short form (RFC 5952)
        "[0::1]:7999",
        "[FE80::1]:7999",  # in upper case
    ],
)
def test_only_canonical_endpoints_are_taken(endpoint: str) -> None:
    with pytest.raises(ValueError):
        split_endpoint(endpoint)
    with pytest.raises(ValidationError):
        DriverHello.model_validate({"status": "READY", "endpoint": endpoint, "type": "GPU"})


@pytest.mark.parametrize(
    "endpoint", ["127.0.0.1:7999", "10.0.0.254:1", "[::1]:7999", "compute-1.example.org:7999"]
)
def test_canonical_endpoints_are_taken(endpoint: str) -> None:
    # Taken as written: a canonical spelling is the one stored.
    hello = DriverHello.model_validate({"status": "READY", "endpoint": endpoint, "type": "GPU"})
    assert hello.endpoint == endpoint


@pytest.mark.parametrize("name", [".", "..", "-", "a.", ".a", "-a", "a-", "a..b", "a" * 64])
def test_agent_names_must_be_host_names(name: str) -> None:
    with pytest.raises(ValidationError):
        AgentHello.model_validate({"status": "READY", "endpoint": "h:1", "name": name})


@pytest.mark.parametrize("name", ["node1", "compute-7.rack2.example", "gpu_node", "7"])
def test_host_names_are_agent_names(name: str) -> None:
    AgentHello.model_validate({"status": "READY", "endpoint": "h:1", "name": name})


def test_host_names_in_endpoints_are_written_in_lower_case() -> None:
    # DNS names are one whatever their case: stored as one, so they compare as one.
    hello = AgentHello.model_validate({"status": "READY", "endpoint": "Compute-7.Example:6671"})
    assert hello.endpoint == "compute-7.example:6671"


def test_endpoints_split_into_host_and_port() -> None:
    assert split_endpoint("compute-whatever:1337") == ("compute-whatever", 1337)
    assert split_endpoint("[fe80::1]:80") == ("fe80::1", 80)
    with pytest.raises(ValueError):
        split_endpoint("[not-v6]:80")


def test_hardware_reads_the_seeds_misspelling_and_writes_it_right() -> None:
    entry = HardwareEntry.model_validate(
        {
            "uuid": "8e45a2ea-5364-4b0d-a252-bf8becaa606e",
            "acc_specs": {
                "remote": 0,
                "num": 1,
                "device_type": "CRYPTO",
                "acc_capability": {"num": 2},
            },
            "acc_status": {"setup_required": True, "reboot_equired": True},
            "from_a_newer_peer": {"ignored": True},
        }
    )
    wire = entry.wire((1, 0))
    assert wire["acc_status"] == {"setup_required": True, "reboot_required": True}
    assert wire["acc_specs"]["device_type"] == "QAT"
    assert set(wire) == {"uuid", "acc_specs", "acc_status"}


def _vgpu_entry(*mdev_types: dict[str, object]) -> dict[str, object]:
    return {
        "uuid": "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
        "acc_specs": {"num": 1, "device_type": "GPU"},
        "acc_status": {"setup_required": False},
        "pci": {
            "address": "0000:17:00.0",
            "vendor_id": "10de",
            "product_id": "2331",
            "class_code": "030200",
        },
        "mdev_types": list(mdev_types),
    }


@pytest.mark.parametrize(
    "mdev_types",
    [
        # One number in a small report became as many attach handles: 10**9 of them
        # took a conductor past 13 GB before it was stopped.
        [{"type_id": "nvidia-1", "available_instances": 10**9}],
        [{"type_id": "nvidia-1", "instances": 10**30}],
        [{"type_id": "nvidia-1", "instances": -3}],
        [{"type_id": "nvidia-1", "available_instances": -1}],
        # Each type within its bound, the entry's total over it.
        [{"type_id": f"nvidia-{n}", "available_instances": 1024} for n in range(64)],
    ],
)
def test_mediated_device_counts_are_bounded(mdev_types: list[dict[str, object]]) -> None:
    with pytest.raises(ValidationError, match="instances"):
        HardwareEntry.model_validate(_vgpu_entry(*mdev_types))


def test_a_real_vgpu_entry_is_taken() -> None:
    # An A16's 1Q profile: 16 instances per GPU; 20 types of 32 is more than any card.
    types = [{"type_id": f"nvidia-{n}", "available_instances": 32} for n in range(20)]
    HardwareEntry.model_validate(_vgpu_entry(*types))


def test_a_report_holds_a_bounded_number_of_attachable_functions() -> None:
    entry = _vgpu_entry({"type_id": "nvidia-1", "available_instances": 1000})
    entries = [{**entry, "uuid": f"0f1e2d3c-4b5a-4978-8695-{n:012x}"} for n in range(41)]
    with pytest.raises(ValidationError, match="attach"):
        HardwareList.model_validate({"hardware": entries})
    HardwareList.model_validate({"hardware": entries[:40]})


def test_a_mediated_device_type_listed_twice_is_refused() -> None:
    # Each listing made its instances' attach handles, the same ones twice over
    # (nvidia-1_0, nvidia-1_1...): two instances bound to one vGPU.
    twice = [{"type_id": "nvidia-1", "available_instances": 2}] * 2
    with pytest.raises(ValidationError, match="nvidia-1"):
        HardwareEntry.model_validate(_vgpu_entry(*twice))
