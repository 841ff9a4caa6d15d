"""The states (and alarm kinds) that rows keep and the APIs show: one enum each.

Each member's value is the string stored in the database and sent on the wire
(Cyborg's own strings for ARQs), so a member compares and serialises as that string.
Sets of states that mean something have their one name here too.

This module sits above ``accel.db`` because the driver and the operator's commands
read operation states and import nothing from the database.
"""

from __future__ import annotations

from enum import StrEnum


class AgentState(StrEnum):
    """Whether an agent is heard: DOWN once it is silent past its conductor's limit."""

    UP = "UP"
    DOWN = "DOWN"


class DeviceStatus(StrEnum):
    """A device in maintenance is kept out of new binds."""

    ENABLED = "enabled"
    MAINTAINING = "maintaining"


class ArqState(StrEnum):
    """An accelerator request's state, as Cyborg names it."""

    INITIAL = "Initial"
    # Left only by releases that bound in two transactions (see fail_abandoned_binds).
    BIND_STARTED = "BindStarted"
    BOUND = "Bound"
    BIND_FAILED = "BindFailed"
    UNBOUND = "Unbound"
    # Cyborg's; accel deletes in one transaction and never stores it.
    DELETING = "Deleting"


# No accelerator held: such a request may be bound, and the api deletes it itself.
ARQ_HOLDING_NOTHING = (ArqState.INITIAL, ArqState.UNBOUND)
# A bind's outcome: a repeated bind to the same place is answered with it.
ARQ_BIND_OUTCOMES = (ArqState.BOUND, ArqState.BIND_FAILED)
# Cyborg's ``?bind_state=resolved``: the requests Nova need not wait for any more.
ARQ_RESOLVED = (ArqState.BOUND, ArqState.BIND_FAILED, ArqState.DELETING)


class NovaEventState(StrEnum):
    """Where a Nova external event (accelerator-request-bound) stands in the outbox."""

    PENDING = "pending"
    SENT = "sent"  # Nova took it (or answered the known 422 race)
    FAILED = "failed"  # Nova refused it, or every try failed: given up


class OperationState(StrEnum):
    """A setup operation's state, the same in the database, the internal API and v2."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"


# At most one unfinished operation per device (a partial unique index keeps it so).
OPERATION_UNFINISHED = (OperationState.PENDING, OperationState.RUNNING)
OPERATION_FINAL = (OperationState.DONE, OperationState.FAILED)


class HealthState(StrEnum):
    """A device's observed health (docs: DESIGN "Device health").

    ``degraded`` is still handed out, flagged; ``failed`` never is; ``unknown`` means
    no evidence and is never treated as failed.
    """

    OK = "ok"
    DEGRADED = "degraded"
    FAILED = "failed"
    UNKNOWN = "unknown"


class CheckSeverity(StrEnum):
    """What one health check's latest reading means for its device."""

    OK = "ok"
    DEGRADED = "degraded"
    FAILED = "failed"


class AlarmState(StrEnum):
    ACTIVE = "active"
    CLEARED = "cleared"


class AlarmKind(StrEnum):
    """What an alarm is about; the comment says what its subject names."""

    AGENT_DOWN = "agent_down"  # the agent's name
    HARDWARE_VANISHED = "hardware_vanished"  # the hardware's uuid
    # The accelerator request whose accelerator vanished under it.
    ALLOCATED_HARDWARE_VANISHED = "allocated_hardware_vanished"
    # A hardware uuid one node reports while another holds it.
    HARDWARE_UUID_CLASH = "hardware_uuid_clash"
    # An agent's name, which a live agent at another endpoint holds.
    AGENT_NAME_CLASH = "agent_name_clash"
    HARDWARE_UNHEALTHY = "hardware_unhealthy"  # the hardware's uuid
    # A node whose compute-node provider Placement does not know (the provider's name).
    PLACEMENT_ROOT_MISSING = "placement_root_missing"
    # A vanished deployable's provider that allocations still hold (the provider's uuid).
    PLACEMENT_PROVIDER_IN_USE = "placement_provider_in_use"
    # "fleet": too many devices turned failed at once; none is taken out of service
    # automatically until an operator confirms (conductor/health.py).
    HEALTH_BRAKE = "health_brake"
