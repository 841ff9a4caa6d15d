"""What the Placement report tests share: an accel database with a node's hardware
stored, a Placement loop with fast retries, and one round of it run by hand."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.agents import record_hello
from accel.conductor.placement.loop import PlacementLoop, placement_loop
from accel.conductor.placement.settings import PlacementSettings
from accel.conductor.reconcile import store_inventory
from accel.db.models import Alarm, Deployable, Device, PlacementNode
from accel.driver.discovery import discover
from accel.driver.fake_sysfs import FakeSysfs
from accel.internal.schemas import DriverOutcome, HardwareEntry, HardwareList, Kind
from accel.metrics import PLACEMENT_CALLS
from accel.openstack.credentials import OpenStackCredentials
from accel.states import AlarmKind, AlarmState
from tests.placement_service import ThrowawayPlacement

T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
FAST = PlacementSettings(retry_after=0.001, check_interval=600.0)


def credentials(**changes: Any) -> OpenStackCredentials:
    return dataclasses.replace(
        OpenStackCredentials(token="admin"), timeout=5.0, retries=1, retry_delay=0.01, **changes
    )


def hardware(tree: FakeSysfs, node: str, kinds: tuple[Kind, ...] = tuple(Kind)) -> HardwareList:
    found: list[HardwareEntry] = []
    for kind in kinds:
        found.extend(discover(kind, tree.root, node))
    outcomes = [DriverOutcome(type=kind, endpoint="x:1", state="ok") for kind in kinds]
    return HardwareList(hardware=found, drivers=outcomes)


def store(sessions: sessionmaker[Session], node: str, found: HardwareList) -> None:
    record_hello(sessions, node, "127.0.0.1:6671", "1.1", T0)
    store_inventory(sessions, node, found, T0, T0, T0 + dt.timedelta(minutes=1))


def loop_for(
    sessions: sessionmaker[Session],
    placement: ThrowawayPlacement,
    owner: str = "conductor-a",
    url: str | None = None,
    settings: PlacementSettings = FAST,
) -> PlacementLoop:
    return placement_loop(sessions, owner, credentials(), url or placement.url, settings)


def run_round(loop: PlacementLoop) -> int:
    return asyncio.run(loop.round())


def node_row(sessions: sessionmaker[Session], node: str) -> PlacementNode:
    with sessions() as session:
        row = session.scalar(select(PlacementNode).where(PlacementNode.node == node))
        assert row is not None
        return row


def active(sessions: sessionmaker[Session], kind: AlarmKind) -> list[str]:
    with sessions() as session:
        return list(
            session.scalars(
                select(Alarm.subject).where(Alarm.kind == kind, Alarm.state == AlarmState.ACTIVE)
            )
        )


def deployables(sessions: sessionmaker[Session], node: str) -> dict[str, str]:
    with sessions() as session:
        rows = session.execute(
            select(Deployable.name, Deployable.rp_uuid)
            .join(Device)
            .where(Device.hostname == node, Device.present.is_(True))
        ).all()
    return {name: str(rp) for name, rp in rows}


def calls(method: str, outcome: str) -> float:
    return float(PLACEMENT_CALLS.labels(method, outcome)._value.get())
