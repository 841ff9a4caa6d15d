"""A device's health in the database, and what a failed device means for the fleet.

The driver judges its evidence (its checks, their policy, the hysteresis); this module
keeps what it reports on the device row, apart from the operator's ``status``:

* The latch. A check reported with ``latch`` fails its device until an operator clears
  it (``clear_health``), whatever the driver reports meanwhile. A latching check whose
  ``last_seen`` is after the last clear latches again.
* Fan-out. A failed device fails everything cut from it (its VFs, its mdevs: every
  attach handle of its deployables); a VF whose own health reads failed fails only its
  own deployable, never its PF. A VF's latching check latches that VF alone, as a
  PF's does the device, until the operator clears the device. A MIG instance whose
  own evidence reads failed (its GPU still well) is named as the device's VFs are.
* Effects. A device (or one of its VFs) that turns failed gets a ``hardware_unhealthy``
  alarm naming the accelerator requests bound to it, cleared when it recovers; binds
  never pick a failed device or VF (``why_unhealthy``); degraded is handed out.
* The brake. If more than ``share`` of the fleet's present devices turned failed
  within ``window`` seconds (a bad driver rollout rather than dying hardware), a
  ``health_brake`` alarm goes up and devices that turn failed from then on stay in
  service (``health_held``) until an operator confirms (``confirm_failures``).

Health is judged only when a report rewrites a device (its fingerprint moved), on the
operator's clear and on the operator's confirmation: never on a hot path.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from accel.conductor.alarms import chunks, clear_alarm, clear_alarms, raise_alarm, raise_alarms
from accel.conductor.health_functions import (
    aware,
    failed_functions,
    function_failures,
    latch,
    latching_seen,
)
from accel.db.models import AcceleratorRequest, Alarm, Deployable, Device
from accel.internal.health_schemas import DeviceHealth
from accel.internal.intervals import HEALTH_BRAKE_SHARE, HEALTH_BRAKE_WINDOW
from accel.internal.schemas import HardwareEntry
from accel.states import AlarmKind, AlarmState, ArqState, CheckSeverity, HealthState

# The brake's alarm has one subject: the fleet.
BRAKE_SUBJECT = "fleet"
# Below this many devices turning failed together the brake never trips: on a small
# fleet one dead card is a large share, and it is news, not a rollout gone wrong.
BRAKE_MIN_DEVICES = 5


@dataclass(frozen=True)
class HealthBrake:
    """The conductor's ``--health-brake-share`` and ``--health-brake-window``."""

    share: float = HEALTH_BRAKE_SHARE
    window: float = HEALTH_BRAKE_WINDOW


@dataclass(frozen=True)
class HealthMemory:
    """What the row holds of a device's health before a report is applied."""

    state: HealthState | None = None
    since: dt.datetime | None = None
    # Each failed VF (its address) or MIG instance ("mig:UUID"), and the check that
    # latched it, if one did.
    functions: tuple[tuple[str, str | None], ...] = ()
    failed_at: dt.datetime | None = None
    held: bool = False
    latched_at: dt.datetime | None = None
    latched_by: str | None = None
    cleared_at: dt.datetime | None = None
    # The report stored before (devices.hardware), read only if a latch may matter.
    before: str | None = None

    @classmethod
    def of(cls, device: Device) -> HealthMemory:
        return cls(
            state=device.health_state,
            since=device.health_since,
            functions=tuple(failed_functions(device.health_functions).items()),
            failed_at=device.health_failed_at,
            held=device.health_held,
            latched_at=device.health_latched_at,
            latched_by=device.health_latched_by,
            cleared_at=device.health_cleared_at,
            before=device.hardware,
        )

    @property
    def failing(self) -> bool:
        return self.state == HealthState.FAILED or bool(self.functions)


@dataclass(frozen=True)
class HealthChange:
    """A device that turned failed (``failed``) or stopped being failed."""

    uuid: str
    failed: bool
    what: str  # "GPU 0000:3b:00.0"
    why: str


def judge(
    entry: HardwareEntry, memory: HealthMemory, now: dt.datetime
) -> tuple[dict[str, Any], HealthChange | None]:
    """The health columns for ``entry`` given what the row held, and the change in
    whether the device is failed (None if there is none)."""
    reported = entry.health
    latched_at, latched_by = memory.latched_at, memory.latched_by
    # Only after a clear does a latch ask what the report before said.
    before = latching_seen(memory.before) if memory.cleared_at is not None else {}
    if latched_at is None and reported is not None:
        latched_by = latch(reported, memory.cleared_at, before)
        latched_at = None if latched_by is None else now
    state = HealthState.FAILED if latched_at is not None else _state(reported)
    if reported is not None and state == reported.state:
        since = aware(reported.since)
    elif state == memory.state and memory.since is not None:
        since = memory.since
    else:
        since = now
    functions = function_failures(entry, dict(memory.functions), memory.cleared_at, before, state)
    failing = state == HealthState.FAILED or bool(functions)
    columns = {
        "health_state": state,
        "health_since": since if state is not None else None,
        "health_checks": None if reported is None else _checks_json(reported),
        "health_functions": json.dumps(functions, sort_keys=True) if functions else None,
        "health_failed_at": (memory.failed_at or now) if failing else None,
        # Whether a device newly failed stays in service is the brake's (``settle``).
        "health_held": memory.held and failing,
        "health_latched_at": latched_at,
        "health_latched_by": latched_by,
        "health_cleared_at": memory.cleared_at,
    }
    change = None
    if failing != memory.failing:
        change = HealthChange(str(entry.uuid), failing, _what(entry), _why(reported, latched_by))
    return columns, change


def _state(reported: DeviceHealth | None) -> HealthState | None:
    return None if reported is None else reported.state


def _checks_json(reported: DeviceHealth) -> str:
    return json.dumps([check.model_dump(mode="json") for check in reported.checks], sort_keys=True)


def _what(entry: HardwareEntry) -> str:
    where = entry.pci.address if entry.pci is not None else str(entry.uuid)
    return f"{entry.acc_specs.device_type} {where}"


def _why(reported: DeviceHealth | None, latched_by: str | None) -> str:
    reasons = [] if latched_by is None else [f"{latched_by} (latched until cleared)"]
    if reported is not None:
        reasons += [
            f"{check.check}={check.value}"
            for check in reported.checks
            if check.severity == CheckSeverity.FAILED and check.check != latched_by
        ]
    return ", ".join(reasons) or "reported failed"


class HealthRow(Protocol):
    """A device's health columns: an ORM device, or a row that selected them."""

    @property
    def health_state(self) -> HealthState | None: ...
    @property
    def health_since(self) -> dt.datetime | None: ...
    @property
    def health_checks(self) -> str | None: ...
    @property
    def health_functions(self) -> str | None: ...
    @property
    def health_held(self) -> bool: ...
    @property
    def health_latched_by(self) -> str | None: ...
    @property
    def health_latched_at(self) -> dt.datetime | None: ...
    @property
    def health_cleared_at(self) -> dt.datetime | None: ...


class NamedHealthRow(HealthRow, Protocol):
    """A device's health columns with its uuid and host."""

    @property
    def uuid(self) -> str: ...
    @property
    def hostname(self) -> str: ...


# The columns a HealthRow selects.
HEALTH_COLUMNS = (
    Device.health_state,
    Device.health_since,
    Device.health_checks,
    Device.health_functions,
    Device.health_held,
    Device.health_latched_by,
    Device.health_latched_at,
    Device.health_cleared_at,
)


def why_unhealthy(device: NamedHealthRow, deployable_name: str) -> str | None:
    """Why health keeps this deployable out of service (a bind refuses it, Placement
    reserves it), or None if it does not."""
    if device.health_held:
        return None
    if device.health_state == HealthState.FAILED:
        return f"device {device.uuid} is failed ({failure_reason(device)})"
    for address in failed_functions(device.health_functions):
        if deployable_name == f"{device.hostname}_{address}":
            return f"virtual function {address} of device {device.uuid} is failed"
    return None


def is_failed(device: Device) -> bool:
    """Whether health takes the whole device out of service (Placement reserves it).

    A device failed while the fleet brake was on stays in service until confirmed.
    """
    return device.health_state == HealthState.FAILED and not device.health_held


def failure_reason(device: HealthRow) -> str:
    """The checks behind a device's state (those of its severity, a latch first, then
    its failed VFs), as the alarm and the gauge's ``reason`` label name them."""
    state = str(device.health_state) if device.health_state is not None else None
    reasons = [] if device.health_latched_by is None else [f"latched:{device.health_latched_by}"]
    if state in (HealthState.DEGRADED, HealthState.FAILED):
        reasons += [
            str(check.get("check"))
            for check in json.loads(device.health_checks or "[]")
            if check.get("severity") == state and check.get("check") != device.health_latched_by
        ]
    for function, check in failed_functions(device.health_functions).items():
        named = function if function.startswith("mig:") else f"vf:{function}"
        reasons.append(named if check is None else f"{named}:latched:{check}")
    return ",".join(reasons)


def settle(
    session: Session,
    changes: Sequence[HealthChange],
    hostnames: dict[str, str],
    now: dt.datetime,
    brake: HealthBrake | None,
) -> None:
    """The effects of devices turning failed or recovering: the brake, the alarms.

    ``hostnames`` maps each changed device's uuid to its node. ``brake`` None (an
    operator's clear, which only ever recovers a device) never trips the brake.
    """
    failed = [change for change in changes if change.failed]
    recovered = [change.uuid for change in changes if not change.failed]
    if recovered:
        clear_alarms(session, AlarmKind.HARDWARE_UNHEALTHY, recovered, now)
    if not failed:
        return
    held = brake_on(session) or (brake is not None and _trips(session, brake, now))
    if held:
        for chunk in chunks(sorted(change.uuid for change in failed)):
            session.execute(
                update(Device)
                .where(Device.uuid.in_(chunk))
                .values(health_held=True)
                .execution_options(synchronize_session="fetch")
            )
    bound = _bound_requests(session, [change.uuid for change in failed])
    messages = {}
    for change in failed:
        arqs = bound.get(change.uuid, [])
        messages[change.uuid] = (
            f"{change.what} on {hostnames.get(change.uuid, '?')} is failed: {change.why}; "
            + (
                f"accelerator requests bound to it: {', '.join(sorted(arqs))}"
                if arqs
                else "no accelerator request is bound to it"
            )
            + (
                "; kept in service by the fleet health brake until an operator confirms "
                "(accel hardware confirm-failures)"
                if held
                else ""
            )
        )
    raise_alarms(session, AlarmKind.HARDWARE_UNHEALTHY, messages, now)


def brake_on(session: Session) -> bool:
    return (
        session.scalar(
            select(Alarm.id).where(
                Alarm.kind == AlarmKind.HEALTH_BRAKE,
                Alarm.subject == BRAKE_SUBJECT,
                Alarm.state == AlarmState.ACTIVE,
            )
        )
        is not None
    )


def _trips(session: Session, brake: HealthBrake, now: dt.datetime) -> bool:
    """Whether the failures counted now trip the brake; if so its alarm is raised.

    Failures from before the last confirmation do not count again.
    """
    start = now - dt.timedelta(seconds=brake.window)
    confirmed = session.scalar(
        select(func.max(Alarm.cleared_at)).where(Alarm.kind == AlarmKind.HEALTH_BRAKE)
    )
    if confirmed is not None and confirmed > start:
        start = confirmed
    recent = (
        session.scalar(
            select(func.count()).where(Device.health_failed_at >= start, Device.present.is_(True))
        )
        or 0
    )
    if recent < BRAKE_MIN_DEVICES:
        return False
    fleet = session.scalar(select(func.count()).where(Device.present.is_(True))) or 0
    if recent <= brake.share * fleet:
        return False
    raise_alarm(
        session,
        AlarmKind.HEALTH_BRAKE,
        BRAKE_SUBJECT,
        f"{recent} of the fleet's {fleet} devices turned failed within "
        f"{brake.window:g} s, more than {brake.share:.0%}: devices that turn failed now "
        "stay in service until an operator confirms (accel hardware confirm-failures)",
        now,
    )
    return True


def _bound_requests(session: Session, uuids: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for chunk in chunks(sorted(uuids)):
        rows = session.execute(
            select(Device.uuid, AcceleratorRequest.uuid)
            .join(Deployable, AcceleratorRequest.deployable_id == Deployable.id)
            .join(Device, Deployable.device_id == Device.id)
            .where(Device.uuid.in_(chunk), AcceleratorRequest.state == ArqState.BOUND)
        )
        for device_uuid, arq_uuid in rows:
            found.setdefault(device_uuid, []).append(arq_uuid)
    return found


def clear_health(session: Session, uuid: str, now: dt.datetime) -> Device | None:
    """An operator's clear: the latch lets go, and the device's health is judged
    again from its last report. None if no such device."""
    device = session.scalar(select(Device).where(Device.uuid == uuid).with_for_update())
    if device is None:
        return None
    memory = HealthMemory.of(device)
    cleared = dataclasses.replace(
        memory,
        latched_at=None,
        latched_by=None,
        cleared_at=now,
        functions=tuple((function, None) for function, _ in memory.functions),
    )
    columns, change = judge(HardwareEntry.model_validate_json(device.hardware), cleared, now)
    for name, value in columns.items():
        setattr(device, name, value)
    if change is not None:
        settle(session, [change], {uuid: device.hostname}, now, None)
    return device


def confirm_failures(session: Session, now: dt.datetime) -> int:
    """An operator's confirmation: devices the brake kept in service go out of it,
    and the brake is released. How many devices went out of service."""
    released = session.execute(
        update(Device)
        .where(Device.health_held.is_(True))
        .values(health_held=False)
        .execution_options(synchronize_session=False)
    )
    clear_alarm(session, AlarmKind.HEALTH_BRAKE, BRAKE_SUBJECT, now)
    return int(released.rowcount)  # type: ignore[attr-defined]
