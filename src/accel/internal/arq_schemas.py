"""Wire schemas of the accelerator-request call (internal minor version 1.2).

The api asks a conductor to bind, unbind or delete accelerator requests
(``POST /v1/accelerator_requests``, an ``ArqChanges``); the conductor applies the
whole change in one transaction and answers each request's outcome (``ArqOutcomes``).
"""

from __future__ import annotations

from uuid import UUID

from pydantic import Field

from accel.internal.schemas import LenientBody, StrictBody


class ArqBinding(StrictBody):
    """Bind one accelerator request where the caller (Nova) placed it."""

    arq_uuid: UUID
    hostname: str = Field(min_length=1, max_length=255)
    device_rp_uuid: UUID
    instance_uuid: UUID
    project_id: str | None = Field(default=None, max_length=255)


# Accelerator requests of each kind one call to a conductor may change (the api sends
# a larger deletion in chunks of this size).
MAX_ARQS_PER_CHANGE = 1000


class ArqChanges(StrictBody):
    bind: list[ArqBinding] = Field(default_factory=list, max_length=MAX_ARQS_PER_CHANGE)
    unbind: list[UUID] = Field(default_factory=list, max_length=MAX_ARQS_PER_CHANGE)
    delete: list[UUID] = Field(default_factory=list, max_length=MAX_ARQS_PER_CHANGE)


# An outcome's state for a request that is gone, and for one whose change was refused:
# never stored, so not ArqStates.
ARQ_DELETED = "Deleted"
ARQ_REFUSED = ""


class ArqOutcome(LenientBody):
    uuid: str
    # The request's state after the change (an ArqState's value), ARQ_DELETED once it
    # is gone, ARQ_REFUSED if refused. Text on the wire, as the body is lenient: a newer conductor
    # may answer a state this release does not know.
    state: str
    reason: str | None = None
    refused: bool = False  # not found, or in a state that cannot change so


class ArqOutcomes(LenientBody):
    arqs: list[ArqOutcome]
