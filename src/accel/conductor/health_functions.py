"""A device's failed functions: its VFs and MIG instances whose own health reads
failed, each with the check that latched it (docs/health.md, "Fan-out").

A VF's latching check latches that VF alone until the operator clears its device,
as a PF's latches the device; neither ever fails its PF. A MIG instance is not a
deployable of its own: it is named so that its alarm and reason say which one.
"""

from __future__ import annotations

import datetime as dt
import json

from accel.internal.health_schemas import DeviceHealth
from accel.internal.schemas import HardwareEntry
from accel.states import HealthState


def aware(moment: dt.datetime) -> dt.datetime:
    # A driver's time without a zone is UTC, as accel's own are.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def failed_functions(column: str | None) -> dict[str, str | None]:
    """The ``health_functions`` column: each failed function and the check that latched
    it, if one did (a row written before VF latches holds a list of addresses)."""
    stored = json.loads(column or "{}")
    return dict.fromkeys(stored) if isinstance(stored, list) else stored


Seen = dict[str, dt.datetime]


def latching_seen(hardware: str | None) -> Seen:
    """When each latching check of a stored report (``devices.hardware``) was last
    seen: the device's as ``check``, a VF's as ``address/check``."""
    if not hardware:
        return {}
    entry = json.loads(hardware)
    seen: Seen = {}
    reports = [("", entry.get("health"))]
    reports += [
        (f"{vf.get('address')}/", vf.get("health")) for vf in entry.get("virtual_functions", [])
    ]
    for prefix, health in reports:
        for check in (health or {}).get("checks", []):
            if check.get("latch"):
                seen[prefix + check["check"]] = aware(dt.datetime.fromisoformat(check["last_seen"]))
    return seen


def latch(
    health: DeviceHealth, cleared_at: dt.datetime | None, before: Seen, prefix: str = ""
) -> str | None:
    """The first latching check with new evidence since the operator's last clear:
    seen after the clear, by the driver's clock, and seen anew since the report stored
    before (whose last sighting the clear already let go). A check the driver dates
    in the far future therefore latches once, not again after every clear."""
    for check in health.checks:
        seen = aware(check.last_seen)
        if not check.latch or (cleared_at is not None and seen <= cleared_at):
            continue
        if cleared_at is None or before.get(prefix + check.check) != seen:
            return check.check
    return None


def function_failures(
    entry: HardwareEntry,
    latched: dict[str, str | None],
    cleared_at: dt.datetime | None,
    before: Seen,
    state: HealthState | None,
) -> dict[str, str | None]:
    """The entry's failed VFs and MIG instances, each with its latch. A VF's latch is
    kept while the VF is reported; a MIG instance is named only while its GPU is not
    failed (the GPU's failure already takes it out with the rest)."""
    failed: dict[str, str | None] = {}
    for vf in entry.virtual_functions:
        latched_by = latched.get(vf.address)
        if latched_by is None and vf.health is not None:
            latched_by = latch(vf.health, cleared_at, before, f"{vf.address}/")
        failing = vf.health is not None and vf.health.state == HealthState.FAILED
        if latched_by is not None or failing:
            failed[vf.address] = latched_by
    if entry.gpu is not None and state != HealthState.FAILED:
        for instance in entry.gpu.mig_instances:
            if instance.health is not None and instance.health.state == HealthState.FAILED:
                failed[f"mig:{instance.uuid}"] = None
    return failed
