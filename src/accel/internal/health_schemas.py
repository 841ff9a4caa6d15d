"""The health a driver reports with each hardware entry (internal API 1.6).

The driver reads the evidence and applies each check's policy; what it sends is the
DESIGN's ``health`` object, plus ``latch`` on a check whose policy keeps its device
failed until an operator clears it (the conductor, which stores health, keeps that
latch across restarts). Older peers ignore the field: entries are lenient.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from accel.states import CheckSeverity, HealthState

# A device has a few dozen checks at most (AER, link, config space, a kind's own).
MAX_CHECKS_PER_DEVICE = 64
MAX_CHECK_NAME_LENGTH = 64  # the latch's column (devices.health_latched_by) holds 64
MAX_VALUE_LENGTH = 255
# A count is the kernel's or NVML's, kept in 64 bits: any reader (a Go or Java client,
# a database's bigint) holds it.
MAX_COUNT = 2**63 - 1


def _in_utc(moment: datetime) -> datetime:
    """A time as UTC (a driver's time without a zone is UTC); one that cannot be written
    in UTC (year 9999 west of Greenwich) is refused rather than failing every store."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is outside what UTC can write (years 1 to 9999)") from None


UtcTime = Annotated[datetime, AfterValidator(_in_utc)]


class _Lenient(BaseModel):
    # As schemas.LenientBody (which imports this module): a newer peer's fields are ignored.
    model_config = ConfigDict(extra="ignore")


class HealthCheck(_Lenient):
    """One check's latest reading and how long it has read so."""

    # A name accel does not know (a newer driver's check) is kept and shown as sent.
    check: Annotated[str, Field(min_length=1, max_length=MAX_CHECK_NAME_LENGTH)]
    severity: CheckSeverity
    value: Annotated[str, Field(max_length=MAX_VALUE_LENGTH)]
    first_seen: UtcTime
    last_seen: UtcTime
    count: int = Field(ge=0, le=MAX_COUNT)
    latch: bool = False


class DeviceHealth(_Lenient):
    state: HealthState
    since: UtcTime
    checks: list[HealthCheck] = Field(default_factory=list, max_length=MAX_CHECKS_PER_DEVICE)
