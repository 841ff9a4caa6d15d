"""An agent's first inventory, written with a few bulk INSERTs instead of objects.

When a fleet comes up every agent's first sync adds all of its hardware: devices,
their deployables, and those deployables' attributes and attach handles. Built as
ORM objects, the unit of work's bookkeeping was the conductor's largest cost while a
thousand nodes converged (its profile). Here the rows of a whole batch of agents go
out as one multi-row INSERT per table, each returning the ids the next one needs;
on PostgreSQL the ids come from the tables' sequences and every table goes by COPY.
The rows are the ones ``device_diff.apply_report`` would have built: the same columns from
``hardware_rows``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, insert, text
from sqlalchemy.orm import Session

from accel.conductor.hardware_rows import DeployablePlan, device_columns, plan_deployables
from accel.conductor.health import HealthChange, HealthMemory, judge
from accel.db.generation import copy_rows
from accel.db.models import AttachHandle, Attribute, Base, Deployable, Device
from accel.internal.schemas import HardwareEntry
from accel.states import DeviceStatus

# On the tables, not the mapped classes: the ORM's bulk path adds a per-row
# bookkeeping pass that cost as much as the SQL.
_DEVICES = Base.metadata.tables[Device.__tablename__]
_DEPLOYABLES = Base.metadata.tables[Deployable.__tablename__]
_ATTRIBUTES = Base.metadata.tables[Attribute.__tablename__]
_ATTACH_HANDLES = Base.metadata.tables[AttachHandle.__tablename__]
# A batch's new ids from a table's sequence, on PostgreSQL.
NEW_IDS = text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)")


@dataclass(frozen=True)
class FirstInventory:
    agent_id: int
    hostname: str
    reported: dict[str, HardwareEntry]
    now: dt.datetime


def insert_first_inventories(
    session: Session, inventories: Sequence[FirstInventory]
) -> list[HealthChange]:
    """Inserts every reported device of agents that have none stored yet; the devices
    reported failed, for their alarms (``health.settle``)."""
    device_rows: list[dict[str, Any]] = []
    failed: list[HealthChange] = []
    plans: dict[str, list[DeployablePlan]] = {}
    created: dict[str, dt.datetime] = {}
    for inventory in inventories:
        for uuid, entry in inventory.reported.items():
            columns = device_columns(entry, inventory.hostname)
            health, change = judge(entry, HealthMemory(), inventory.now)
            if change is not None:
                failed.append(change)
            device_rows.append(
                {
                    **columns,
                    **health,
                    "uuid": uuid,
                    "agent_id": inventory.agent_id,
                    "present": True,
                    "status": DeviceStatus.ENABLED,
                    "created_at": inventory.now,
                }
            )
            # By name, as device_diff keeps them: one deployable per name.
            by_name = {plan.name: plan for plan in plan_deployables(entry, inventory.hostname)}
            plans[uuid] = list(by_name.values())
            created[uuid] = inventory.now
    if not device_rows:
        return failed
    device_ids = {
        uuid: device_id
        for (uuid,), device_id in _insert_with_ids(session, _DEVICES, device_rows, ("uuid",))
    }
    wanted = [
        (device_ids[uuid], plan, created[uuid])
        for uuid, device_plans in plans.items()
        for plan in device_plans
    ]
    if not wanted:
        return failed
    deployable_rows = [
        {
            "device_id": device_id,
            "name": plan.name,
            "num_accelerators": plan.num_accelerators,
            "rp_uuid": plan.rp_uuid,
            "driver_name": plan.driver_name,
            "created_at": now,
        }
        for device_id, plan, now in wanted
    ]
    deployable_ids = dict(
        _insert_with_ids(session, _DEPLOYABLES, deployable_rows, ("device_id", "name"))
    )
    attributes = []
    handles = []
    for device_id, plan, now in wanted:
        deployable_id = deployable_ids[(device_id, plan.name)]
        attributes += [
            {"deployable_id": deployable_id, "key": key, "value": value, "created_at": now}
            for key, value in plan.attributes
        ]
        handles += [
            {
                "deployable_id": deployable_id,
                "attach_type": attach_type,
                "attach_info": info,
                "in_use": False,
                "created_at": now,
            }
            for attach_type, info in plan.attach_handles
        ]
    for table, rows in ((_ATTRIBUTES, attributes), (_ATTACH_HANDLES, handles)):
        if not rows:
            continue
        if _copies(session):
            copy_rows(session, table, rows)
        else:
            session.execute(insert(table), rows)
    return failed


def _copies(session: Session) -> bool:
    """Whether rows go by COPY: on PostgreSQL."""
    return session.get_bind().dialect.name == "postgresql"


def _insert_with_ids(
    session: Session, table: Table, rows: list[dict[str, Any]], key: tuple[str, ...]
) -> list[tuple[tuple[Any, ...], int]]:
    """Inserts ``rows``; each one's ``key`` columns with its new id.

    On PostgreSQL the ids are taken from the table's sequence first and the rows go by
    COPY: a multi-row INSERT ... RETURNING of a batch is a statement so long that
    psycopg's parsing of its placeholders was the conductor's busiest function while
    a fleet came up (docs/benchmarks.md, "Figures behind the code"). Elsewhere one
    INSERT returns them.
    """
    if not _copies(session):
        statement = insert(table).returning(table.c.id, *(table.c[name] for name in key))
        return [(tuple(found), new_id) for new_id, *found in session.execute(statement, rows)]
    ids = list(session.scalars(NEW_IDS, {"table": table.name, "n": len(rows)}))
    numbered = list(zip(rows, ids, strict=True))
    copy_rows(session, table, [{**row, "id": new_id} for row, new_id in numbered])
    return [(tuple(row[name] for name in key), new_id) for row, new_id in numbered]
