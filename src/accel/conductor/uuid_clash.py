"""Hardware uuids that one node reports while another node holds them.

A uuid names one device of one node (drivers derive it from the node's name and the
device's PCI identity), and the devices table holds each uuid once. A node that
reports a uuid another node holds (a copied tree, a driver given the wrong
``--node``, a hostile one) has that entry refused, and only that entry: the rest of
its report is stored, the holder keeps its device, and a ``hardware_uuid_clash``
alarm names the uuid, the node that reported it and the node that holds it. The
alarm clears once the reporting node's reports no longer name the uuid.

Within one batch of syncs the first to claim a new uuid keeps it, as the first
sync stored would.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from accel.conductor.alarms import chunks, clear_alarms, raise_alarms
from accel.db.models import Agent, Alarm, Device
from accel.states import AlarmKind, AlarmState


def _message(reporter: str, uuid: str, holder: str) -> str:
    # The reporter comes first: ``reporter_of`` reads it back to clear the alarm.
    return (
        f"{reporter} reports hardware uuid {uuid}, which {holder} holds; "
        f"{reporter}'s entry for it is refused"
    )


def reporter_of(message: str) -> str:
    return message.split(" ", 1)[0]


@dataclass
class UuidClashes:
    """One batch's view: who holds the uuids its reports name, and what it changes."""

    # uuid -> the name of the agent whose device row has it, or that claimed it first
    # in this batch.
    holders: dict[str, str]
    # Active clash alarms: uuid -> the agent whose report raised it.
    active: dict[str, str]
    raising: dict[str, str] = field(default_factory=dict)
    clearing: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, session: Session, new_uuids: Iterable[str]) -> UuidClashes:
        """Reads the holders of ``new_uuids`` (uuids some node reports that it does not
        hold) and the active clash alarms; a handful of narrow queries."""
        holders: dict[str, str] = {}
        for chunk in chunks(sorted(set(new_uuids))):
            rows = session.execute(
                select(Device.uuid, Agent.name).join(Agent).where(Device.uuid.in_(chunk))
            )
            holders.update({uuid: name for uuid, name in rows})
        alarms = session.execute(
            select(Alarm.subject, Alarm.message).where(
                Alarm.kind == AlarmKind.HARDWARE_UUID_CLASH, Alarm.state == AlarmState.ACTIVE
            )
        )
        return cls(holders, {subject: reporter_of(message) for subject, message in alarms})

    def refuse(self, reporter: str, new_uuids: Iterable[str]) -> set[str]:
        """Of the uuids ``reporter`` reports and does not hold, those another node holds
        (each to be alarmed); the others are claimed for ``reporter`` from now on."""
        refused = set()
        for uuid in new_uuids:
            holder = self.holders.setdefault(uuid, reporter)
            if holder != reporter:
                refused.add(uuid)
                self.raising[uuid] = _message(reporter, uuid, holder)
        # Alarms this reporter raised for uuids it no longer clashes on are cleared.
        self.clearing.update(
            uuid
            for uuid, raised_by in self.active.items()
            if raised_by == reporter and uuid not in refused
        )
        return refused

    def write(self, session: Session, now: dt.datetime) -> None:
        clear_alarms(session, AlarmKind.HARDWARE_UUID_CLASH, self.clearing - set(self.raising), now)
        raise_alarms(session, AlarmKind.HARDWARE_UUID_CLASH, self.raising, now)


def new_uuids(stored: Mapping[str, object], reported: Iterable[str]) -> list[str]:
    return [uuid for uuid in reported if uuid not in stored]
