"""What each check's bad reading does to its device, with defaults an operator may
change per check (``accel driver --health-policy CHECK=ACTION``, or the config file's
``health-policy`` list), and the hysteresis the state machine applies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from accel.driver.health.fpga import FPGA_CHECKS
from accel.driver.health.gpu import DEFAULT_IGNORED_XIDS, GPU_CHECKS
from accel.driver.health.pcie import AER_CHECKS, CONFIG_CHECK, LINK_CHECKS
from accel.driver.health.qat import QAT_CHECKS

FLAPPING = "flapping"
# Seconds a failed device stays failed after its last failing reading, whatever the
# polls say meanwhile. The conductor learns a device's health only when it syncs the
# node's report (at the agent's next heartbeat, 10 s by default, later on a busy
# fleet); a failure that came and went between two syncs would otherwise be stored
# nowhere, raise no alarm, and leave the device bindable while it was failed.
FAILED_HOLD = 30.0


class Action(StrEnum):
    """ignore: the reading counts as clean; degrade: the device is still handed out,
    flagged; fail: never handed out; latch: failed, and kept failed by the conductor
    until an operator clears it."""

    IGNORE = "ignore"
    DEGRADE = "degrade"
    FAIL = "fail"
    LATCH = "latch"


_DEFAULTS = {
    "aer_fatal": Action.FAIL,
    "aer_nonfatal": Action.FAIL,
    "aer_correctable": Action.DEGRADE,
    "link_down": Action.FAIL,
    "link_width": Action.DEGRADE,
    # GPUs drop their link to a lower speed when idle to save power: a speed below
    # the maximum is normal there, a width below it is not.
    "link_speed": Action.IGNORE,
    CONFIG_CHECK: Action.FAIL,
    "qat_state": Action.FAIL,
    "qat_heartbeat": Action.FAIL,
    "qat_ras_fatal": Action.FAIL,
    "qat_ras_nonfatal": Action.DEGRADE,
    "qat_ras_correctable": Action.DEGRADE,
    "fpga_catfatal": Action.FAIL,
    "fpga_errors": Action.DEGRADE,
    "fpga_thermal": Action.DEGRADE,
    "fpga_power": Action.DEGRADE,
    "gpu_lost": Action.FAIL,
    "gpu_xid": Action.FAIL,
    "gpu_ecc": Action.DEGRADE,
    "gpu_memory_pending": Action.DEGRADE,
    "gpu_row_remap_failure": Action.FAIL,
    "gpu_recovery_action": Action.FAIL,
    "gpu_temperature": Action.DEGRADE,
    FLAPPING: Action.LATCH,
}
CHECKS = (*AER_CHECKS, *LINK_CHECKS, CONFIG_CHECK, *QAT_CHECKS, *FPGA_CHECKS, *GPU_CHECKS, FLAPPING)
assert set(CHECKS) == set(_DEFAULTS), "every check has a default action"
DEFAULT_ACTIONS: Mapping[str, Action] = MappingProxyType(_DEFAULTS)


@dataclass(frozen=True)
class HealthPolicy:
    """The per-check actions and the state machine's hysteresis (docs/health.md)."""

    actions: Mapping[str, Action] = field(default_factory=lambda: DEFAULT_ACTIONS)
    # Correctable errors (AER, QAT RAS) in one poll before they count as bad.
    correctable_limit: int = 10
    ignored_xids: frozenset[int] = DEFAULT_IGNORED_XIDS
    # Degraded evidence in this many of the last ``degrade_window`` polls degrades.
    degrade_polls: int = 2
    degrade_window: int = 3
    # Consecutive polls of positive evidence before a device leaves a worse state.
    recover_polls: int = 3
    # This many entries into failed within ``flap_window`` seconds is flapping.
    flap_count: int = 3
    flap_window: float = 3600.0
    failed_hold: float = FAILED_HOLD

    def __post_init__(self) -> None:
        if not 1 <= self.degrade_polls <= self.degrade_window:
            raise ValueError("degrade polls must be between 1 and the degrade window")
        if self.recover_polls < 1 or self.flap_count < 2 or self.flap_window <= 0:
            raise ValueError("recover polls must be >= 1, flap count >= 2, flap window > 0")
        if self.correctable_limit < 1:
            raise ValueError("the correctable limit must be >= 1")
        if self.failed_hold < 0:
            raise ValueError("the failed hold must be >= 0 seconds")

    def action(self, check: str) -> Action:
        return self.actions.get(check, Action.FAIL)


def parse_actions(items: Iterable[str]) -> Mapping[str, Action]:
    """The default actions with ``CHECK=ACTION`` overrides; unknown names are refused."""
    actions = dict(DEFAULT_ACTIONS)
    for item in items:
        check, _, action = item.partition("=")
        check, action = check.strip(), action.strip().lower()
        if check not in DEFAULT_ACTIONS:
            raise ValueError(f"unknown health check {check!r}; known: {', '.join(CHECKS)}")
        try:
            actions[check] = Action(action)
        except ValueError:
            raise ValueError(
                f"unknown action {action!r} for {check}; one of "
                f"{', '.join(a.value for a in Action)}"
            ) from None
    return MappingProxyType(actions)


def parse_xids(text: str) -> frozenset[int]:
    """A comma-separated XID list ("" ignores none)."""
    try:
        return frozenset(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of XID numbers") from None
