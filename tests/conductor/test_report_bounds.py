"""Bounds on what one node's report may make the conductor do, and what it stores."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.agents import record_hello
from accel.conductor.reconcile import store_inventory
from accel.db.models import Alarm, Device
from accel.errors import PeerError
from accel.internal.schemas import (
    MAX_ENTRIES_PER_DRIVER,
    MAX_ENTRIES_PER_NODE,
    DriverOutcome,
    HardwareEntry,
    HardwareList,
    Kind,
)
from accel.states import AlarmKind, AlarmState

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def entry(index: int, kind: str = "GPU", **pci: Any) -> dict[str, object]:
    return {
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{kind}/{index}")),
        "acc_specs": {"num": 1, "device_type": kind},
        "acc_status": {"setup_required": False},
        "pci": {
            "address": f"0000:{index // 32 % 256:02x}:{index % 32:02x}.0",
            "vendor_id": "10de",
            "product_id": "2331",
            "class_code": "030200",
            **pci,
        },
    }


def report(count: int, kind: Kind = Kind.GPU) -> HardwareList:
    return HardwareList.model_validate(
        {
            "hardware": [entry(i, kind.value) for i in range(count)],
            "drivers": [DriverOutcome(type=kind, endpoint="x:1", state="ok").model_dump()],
        }
    )


@pytest.mark.parametrize(
    "pci",
    [
        {"product_name": "x" * 500_000},
        {"vendor_name": "y" * 256},
        {"address": "0000:00:00.0; DROP TABLE devices"},
        {"address": "0" * 40},
        {"vendor_id": "1" * 65},
    ],
)
def test_oversize_or_malformed_text_in_an_entry_is_refused(pci: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        HardwareEntry.model_validate(entry(0, **pci))


def test_a_free_form_capability_is_bounded_by_its_size() -> None:
    big = entry(0)
    big["acc_specs"] = {"num": 1, "device_type": "GPU", "acc_capability": {"x": "y" * 20_000}}
    with pytest.raises(ValidationError, match="acc_capability"):
        HardwareEntry.model_validate(big)


def test_a_free_form_capability_is_bounded_by_its_depth() -> None:
    """A capability deep enough that every answer carrying it stays within what
    accel's own bounded parser reads back (an operator's `accel hardware list`)."""
    deep: dict[str, Any] = {}
    for _ in range(40):
        deep = {"a": deep}
    hostile = entry(0)
    hostile["acc_specs"] = {"num": 1, "device_type": "GPU", "acc_capability": deep}
    with pytest.raises(ValidationError, match="acc_capability"):
        HardwareEntry.model_validate_json(json.dumps(hostile))
    shallow = entry(1)
    shallow["acc_specs"] = {"num": 1, "device_type": "GPU", "acc_capability": {"a": {"b": 1}}}
    HardwareEntry.model_validate_json(json.dumps(shallow))


def test_a_node_report_over_the_bound_is_refused_whole() -> None:
    hardware = [entry(i) for i in range(MAX_ENTRIES_PER_NODE + 1)]
    with pytest.raises(ValidationError, match="hardware"):
        HardwareList.model_validate({"hardware": hardware})


def test_more_entries_of_one_kind_than_a_driver_may_report_fail_the_sync_keeping_the_inventory(
    sessions: sessionmaker[Session],
) -> None:
    record_hello(sessions, "node1", "127.0.0.1:6671", "1.5", T0)
    store_inventory(sessions, "node1", report(8), T0, T0, T0)
    with pytest.raises(PeerError, match=f"more than the {MAX_ENTRIES_PER_DRIVER}"):
        store_inventory(sessions, "node1", report(MAX_ENTRIES_PER_DRIVER + 1), T0, T0, T0)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Device)) == 8
        assert session.scalar(select(func.count()).select_from(Alarm)) == 0


def test_a_whole_driver_vanishing_at_once_raises_one_alarm_per_device_and_clears_them(
    sessions: sessionmaker[Session],
) -> None:
    # Raised in bulk, a few statements: the same alarms as one by one.
    record_hello(sessions, "node1", "127.0.0.1:6671", "1.5", T0)
    full = report(MAX_ENTRIES_PER_DRIVER)
    store_inventory(sessions, "node1", full, T0, T0, T0)
    later = T0 + dt.timedelta(minutes=1)
    diff = store_inventory(sessions, "node1", report(0), later, later, later)
    assert len(diff.vanished) == MAX_ENTRIES_PER_DRIVER
    with sessions() as session:
        active = set(
            session.scalars(
                select(Alarm.subject).where(
                    Alarm.kind == AlarmKind.HARDWARE_VANISHED, Alarm.state == AlarmState.ACTIVE
                )
            )
        )
    assert active == {str(e.uuid) for e in full.hardware}
    back = T0 + dt.timedelta(minutes=2)
    diff = store_inventory(sessions, "node1", full, back, back, back)
    assert len(diff.returned) == MAX_ENTRIES_PER_DRIVER
    with sessions() as session:
        states = set(session.scalars(select(Alarm.state)))
        cleared = session.scalar(select(func.min(Alarm.cleared_at)))
    assert states == {AlarmState.CLEARED} and cleared == back
