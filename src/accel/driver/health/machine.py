"""One device's health over time: the state machine with its hysteresis and flap latch.

* A failing reading (after the policy) fails the device at once; degrading readings
  degrade it once they are seen in ``degrade_polls`` of the last ``degrade_window``
  polls, so one noisy poll does not.
* A device leaves a worse state only after ``recover_polls`` consecutive polls in which
  every check that put it there read healthy. A check that reads nothing (a file gone,
  NVML not answering) is silence: it breaks the run, so silence never heals.
* A failed device stays failed for ``failed_hold`` seconds after its last failing
  reading, however clean the polls since: long enough for the report that says so
  to reach the conductor, which would otherwise never learn of a short failure.
* A device that reads nothing at all is ``unknown``, never failed; one already
  degraded or failed stays so.
* ``flap_count`` entries into ``failed`` within ``flap_window`` seconds add the
  ``flapping`` check, whose default action latches. Entries into ``degraded`` do not
  count: a GPU that runs hot under load and cools between jobs is not broken.

A check's record keeps the last bad value with its first and last sighting and count;
``last_seen`` and ``count`` move only on new evidence, so a condition that merely
persists leaves the report, and so the node's ETag, unchanged.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from accel.driver.health.evidence import Reading
from accel.driver.health.policy import FLAPPING, Action, HealthPolicy
from accel.internal.health_schemas import DeviceHealth, HealthCheck
from accel.states import CheckSeverity, HealthState

_SEVERITY = {Action.DEGRADE: CheckSeverity.DEGRADED, Action.FAIL: CheckSeverity.FAILED}
_RANK = {CheckSeverity.OK: 0, CheckSeverity.DEGRADED: 1, CheckSeverity.FAILED: 2}
_STATE_RANK = {HealthState.UNKNOWN: 0, HealthState.OK: 0, HealthState.DEGRADED: 1}
_STATE_OF = {0: HealthState.OK, 1: HealthState.DEGRADED, 2: HealthState.FAILED}


def _rank(state: HealthState) -> int:
    return _STATE_RANK.get(state, 2)


@dataclass
class _Record:
    severity: CheckSeverity
    value: str
    first_seen: datetime
    last_seen: datetime
    count: int
    latch: bool

    def as_check(self, check: str) -> HealthCheck:
        return HealthCheck(
            check=check,
            severity=self.severity,
            value=self.value[:255],
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            count=self.count,
            latch=self.latch,
        )


class DeviceMachine:
    """The health of one device (a physical function or a VF)."""

    def __init__(self, policy: HealthPolicy, now: datetime) -> None:
        self.policy = policy
        self.state = HealthState.UNKNOWN
        self.since = now
        self.records: dict[str, _Record] = {}
        self.calm = 0
        self.marks: deque[bool] = deque(maxlen=policy.degrade_window)
        self.entries: deque[datetime] = deque()
        self.failing_at: datetime | None = None

    def observe(self, readings: Iterable[Reading], now: datetime) -> bool:
        """Takes one poll's readings; True if the reported health changed."""
        before = self._snapshot()
        taken = [r for r in readings if r.check != FLAPPING]
        worst = max((self._rank_of(r) for r in taken), default=0)
        self.marks.append(worst == 1)
        if worst == 2 and _rank(self.state) < 2:
            self.entries.append(now)
        taken.append(self._flapping(now))
        worst = max(worst, self._rank_of(taken[-1]))
        if worst == 2:
            self.failing_at = now
        held = {check for check, r in self.records.items() if r.severity is not CheckSeverity.OK}
        silent = False
        read_any = False
        for reading in taken:
            if reading.bad is None:
                silent = silent or reading.check in held
                continue
            read_any = read_any or reading.check != FLAPPING
            if self._rank_of(reading):
                self._record(reading, now)
        self._move(worst, read_any, silent, {r.check for r in taken if self._rank_of(r)}, now)
        return self._snapshot() != before

    def _rank_of(self, reading: Reading) -> int:
        if not reading.bad:
            return 0
        action = self.policy.action(reading.check)
        if action is Action.IGNORE:
            return 0
        return _RANK[_SEVERITY.get(action, CheckSeverity.FAILED)]

    def _flapping(self, now: datetime) -> Reading:
        window = self.policy.flap_window
        while self.entries and (now - self.entries[0]).total_seconds() > window:
            self.entries.popleft()
        flapping = len(self.entries) >= self.policy.flap_count
        value = f"{len(self.entries)} times failed in {window:g} s"
        return Reading(FLAPPING, flapping, value, new=flapping)

    def _record(self, reading: Reading, now: datetime) -> None:
        action = self.policy.action(reading.check)
        severity = _SEVERITY.get(action, CheckSeverity.FAILED)
        record = self.records.get(reading.check)
        if record is None or record.severity is CheckSeverity.OK:
            self.records[reading.check] = _Record(
                severity, reading.value, now, now, 1, action is Action.LATCH
            )
            return
        if reading.new or reading.value != record.value:
            record.last_seen = now
            record.count += 1
        record.value = reading.value
        record.severity = severity
        record.latch = action is Action.LATCH

    def _move(
        self, worst: int, read_any: bool, silent: bool, active: set[str], now: datetime
    ) -> None:
        rank = _rank(self.state)
        if worst > rank:
            if worst == 2 or sum(self.marks) >= self.policy.degrade_polls:
                self._become(_STATE_OF[worst], now)
            elif self.state is HealthState.UNKNOWN:
                # Degrading evidence not yet seen often enough is still evidence.
                self._become(HealthState.OK, now)
            return
        if worst == rank and rank > 0:
            self.calm = 0
            return
        if rank == 0:
            self._settle(active)
            if read_any:
                if self.state is HealthState.UNKNOWN:
                    self._become(HealthState.OK, now)
            elif self.state is HealthState.OK:
                self._become(HealthState.UNKNOWN, now)
            return
        # A worse state than the readings now say: leave it only on positive evidence.
        self.calm = 0 if silent else self.calm + 1
        if self.calm >= self.policy.recover_polls and not self._held(now):
            self._become(_STATE_OF[worst], now)
            self._settle(active)

    def _held(self, now: datetime) -> bool:
        """Whether a failed device is still within its hold (``failed_hold``)."""
        if self.state is not HealthState.FAILED or self.failing_at is None:
            return False
        return (now - self.failing_at).total_seconds() < self.policy.failed_hold

    def _settle(self, active: set[str]) -> None:
        """Checks that read healthy no longer hold the device: their severity is ok."""
        for check, record in self.records.items():
            if check not in active:
                record.severity = CheckSeverity.OK

    def _become(self, state: HealthState, now: datetime) -> None:
        self.state = state
        self.since = now
        self.calm = 0

    def _snapshot(self) -> tuple[object, ...]:
        return (
            self.state,
            self.since,
            tuple((c, *vars(r).values()) for c, r in self.records.items()),
        )

    def health(self) -> DeviceHealth:
        return DeviceHealth(
            state=self.state,
            since=self.since,
            checks=[self.records[check].as_check(check) for check in sorted(self.records)],
        )


def fanned_out(parent: DeviceHealth, own: DeviceHealth | None) -> DeviceHealth:
    """A part's health (a MIG instance) given its parent's: its own, unless the parent's
    state is worse, which then holds it with the parent's checks of that severity."""
    if own is not None and _rank(own.state) >= _rank(parent.state):
        return own
    if _rank(parent.state) == 0:
        return own or DeviceHealth(state=parent.state, since=parent.since)
    holding = [c for c in parent.checks if c.severity.value == parent.state.value]
    held = {c.check for c in holding}
    mine = [] if own is None else [c for c in own.checks if c.check not in held]
    return DeviceHealth(state=parent.state, since=parent.since, checks=[*holding, *mine])
