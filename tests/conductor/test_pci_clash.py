"""A report naming one PCI function twice: two attach handles for one device.

Two entries of other uuids at one address (a driver's bug, a copied tree, two
drivers claiming one function) made two deployables whose attach handles were the
same function, so two instances could be bound to one accelerator. Such a report is
refused whole, as one naming a uuid twice is: the inventory stays as stored.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.agents import record_hello
from accel.conductor.reconcile import store_inventory
from accel.db.models import AttachHandle
from accel.driver.discovery import discover
from accel.driver.fake_sysfs import build_gpu_server
from accel.errors import PeerError
from accel.internal.schemas import DriverOutcome, HardwareList, Kind

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
OK = [DriverOutcome(type=Kind.GPU, endpoint="x:1", state="ok")]


def report(root: Path, change: Any) -> HardwareList:
    found = HardwareList(hardware=discover(Kind.GPU, build_gpu_server(root).root, "node1"))
    document = json.loads(found.model_dump_json())
    change(document["hardware"])
    return HardwareList.model_validate({**document, "drivers": [o.model_dump() for o in OK]})


def same_address(entries: list[dict[str, Any]]) -> None:
    entries[1]["pci"]["address"] = entries[0]["pci"]["address"]


def same_address_upper_case(entries: list[dict[str, Any]]) -> None:
    entries[1]["pci"]["address"] = entries[0]["pci"]["address"].upper()


def same_address_long_domain(entries: list[dict[str, Any]]) -> None:
    entries[1]["pci"]["address"] = "0000" + entries[0]["pci"]["address"]


def a_vf_at_another_entrys_address(entries: list[dict[str, Any]]) -> None:
    vf = {**entries[0]["pci"], "address": entries[1]["pci"]["address"]}
    entries[0]["virtual_functions"] = [vf]


def one_vf_twice(entries: list[dict[str, Any]]) -> None:
    vf = {**entries[0]["pci"], "address": "0000:ee:00.1"}
    entries[0]["virtual_functions"] = [vf, vf]


@pytest.mark.parametrize(
    "change",
    [
        same_address,
        same_address_upper_case,
        same_address_long_domain,
        a_vf_at_another_entrys_address,
    ],
)
def test_a_report_naming_one_pci_function_twice_is_refused(
    sessions: sessionmaker[Session], tmp_path: Path, change: Any
) -> None:
    record_hello(sessions, "node1", "127.0.0.1:6671", "1.5", T0)
    good = report(tmp_path / "good", lambda entries: None)
    store_inventory(sessions, "node1", good, T0, T0, T0)
    with sessions() as session:
        handles = session.scalar(select(func.count()).select_from(AttachHandle))
    with pytest.raises(PeerError, match=r"PCI function .* twice"):
        store_inventory(sessions, "node1", report(tmp_path / "bad", change), T0, T0, T0)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(AttachHandle)) == handles
