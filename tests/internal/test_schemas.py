"""The internal API's bodies: strict on the way in, lenient when read from peers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from accel.internal.schemas import AgentHello, DriverHello, HardwareEntry, Kind, split_endpoint


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
