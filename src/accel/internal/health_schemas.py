"""The health a driver reports with each hardware entry (internal API 1.6).

The driver reads the evidence and applies each check's policy; what it sends is the
DESIGN's ``health`` object, plus ``latch`` on a check whose policy keeps its device
failed until an operator clears it (the conductor, which stores health, keeps that
latch across restarts). Older peers ignore the field: entries are lenient.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from accel.states import CheckSeverity, HealthState

# A device has a few dozen checks at most (AER, link, config space, a kind's own).
MAX_CHECKS_PER_DEVICE = 64


class _Lenient(BaseModel):
    # As schemas.LenientBody (which imports this module): a newer peer's fields are ignored.
    model_config = ConfigDict(extra="ignore")


class HealthCheck(_Lenient):
    """One check's latest reading and how long it has read so."""

    check: Annotated[str, Field(min_length=1, max_length=64)]
    severity: CheckSeverity
    value: Annotated[str, Field(max_length=255)]
    first_seen: datetime
    last_seen: datetime
    count: int = Field(ge=0)
    latch: bool = False


class DeviceHealth(_Lenient):
    state: HealthState
    since: datetime
    checks: list[HealthCheck] = Field(default_factory=list, max_length=MAX_CHECKS_PER_DEVICE)
