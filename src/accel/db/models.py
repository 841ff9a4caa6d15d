"""Tables, shaped after OpenStack Cyborg's data model so its v2 API maps onto them.

devices -> deployables -> attributes / attach_handles is Cyborg's model: a device is
one piece of hardware an agent reported (a PF with its VFs), a deployable is what
can be allocated from it (the PF, or each VF). accel adds agents, alarms and
conductors, and keeps vanished hardware as history (``present`` false) instead of
deleting it.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from accel.db.columns import StateColumn, Timestamps, UtcDateTime, new_uuid, utcnow
from accel.states import (
    ARQ_BIND_OUTCOMES,
    OPERATION_UNFINISHED,
    AgentState,
    AlarmKind,
    AlarmState,
    ArqState,
    DeviceStatus,
    HealthState,
    NovaEventState,
    OperationState,
)


class Base(DeclarativeBase):
    pass


class Agent(Timestamps, Base):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    endpoint: Mapped[str] = mapped_column(String(300))
    state: Mapped[AgentState] = mapped_column(StateColumn(AgentState, 8), default=AgentState.UP)
    internal_version: Mapped[str | None] = mapped_column(String(16))
    last_seen: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_synced_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    next_sync_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, index=True)
    last_sync_error: Mapped[str | None] = mapped_column(Text)
    # The sync lease: the conductor running this agent's sync, until the lease expires
    # unrenewed (its holder died) and another conductor may take the sync over.
    sync_owner: Mapped[str | None] = mapped_column(String(255), index=True)
    sync_lease_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    last_synced_by: Mapped[str | None] = mapped_column(String(255))  # a conductor's name
    # The ETag (internal 1.4) of the last report stored: a resync sends it, and an
    # agent whose hardware still matches answers 304 instead of the whole report.
    inventory_etag: Mapped[str | None] = mapped_column(String(80))
    # The name of the node's compute-node provider in Placement, if not the node's name
    # (the agent's --resource-provider-name; Nova often knows a node by its FQDN).
    resource_provider_name: Mapped[str | None] = mapped_column(String(255))

    devices: Mapped[list[Device]] = relationship(back_populates="agent")


class Device(Timestamps, Base):
    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="RESTRICT"), index=True)
    type: Mapped[str] = mapped_column(String(16), index=True)
    vendor: Mapped[str] = mapped_column(String(255))
    model: Mapped[str] = mapped_column(String(255))
    std_board_info: Mapped[str | None] = mapped_column(Text)
    vendor_board_info: Mapped[str | None] = mapped_column(Text)
    hostname: Mapped[str] = mapped_column(String(255), index=True)
    status: Mapped[DeviceStatus] = mapped_column(
        StateColumn(DeviceStatus, 16), default=DeviceStatus.ENABLED
    )
    pci_address: Mapped[str | None] = mapped_column(String(16))
    setup_required: Mapped[bool] = mapped_column(Boolean, default=False)
    reboot_required: Mapped[bool] = mapped_column(Boolean, default=False)
    present: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    vanished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    fingerprint: Mapped[str] = mapped_column(String(64))
    hardware: Mapped[str] = mapped_column(Text)  # the entry as the agent last reported it
    # Observed health (conductor/health.py writes it; ``status`` above is the operator's).
    # The state shown: the driver's, or failed while a latch holds. None: never reported.
    health_state: Mapped[HealthState | None] = mapped_column(StateColumn(HealthState, 16))
    health_since: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    health_checks: Mapped[str | None] = mapped_column(Text)  # JSON: the reported checks
    # JSON: the addresses of the VFs whose own health reads failed.
    health_functions: Mapped[str | None] = mapped_column(Text)
    # When the device (or one of its VFs) last turned failed; None while it is not.
    health_failed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, index=True)
    # Failed while the fleet brake was on: kept in service until an operator confirms.
    health_held: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    health_latched_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    health_latched_by: Mapped[str | None] = mapped_column(String(64))  # the check's name
    health_cleared_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    agent: Mapped[Agent] = relationship(back_populates="devices")
    deployables: Mapped[list[Deployable]] = relationship(
        back_populates="device", cascade="all, delete-orphan", order_by="Deployable.id"
    )


class Deployable(Timestamps, Base):
    __tablename__ = "deployables"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[int | None] = mapped_column(Integer)
    root_id: Mapped[int | None] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    num_accelerators: Mapped[int] = mapped_column(Integer)
    rp_uuid: Mapped[str | None] = mapped_column(String(36))
    driver_name: Mapped[str | None] = mapped_column(String(100))
    bitstream_id: Mapped[str | None] = mapped_column(String(36))

    device: Mapped[Device] = relationship(back_populates="deployables")
    attributes: Mapped[list[Attribute]] = relationship(
        back_populates="deployable", cascade="all, delete-orphan", order_by="Attribute.id"
    )
    attach_handles: Mapped[list[AttachHandle]] = relationship(
        back_populates="deployable", cascade="all, delete-orphan", order_by="AttachHandle.id"
    )


class Attribute(Timestamps, Base):
    __tablename__ = "attributes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    deployable_id: Mapped[int] = mapped_column(
        ForeignKey("deployables.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(Text)
    value: Mapped[str] = mapped_column(Text)

    deployable: Mapped[Deployable] = relationship(back_populates="attributes")


class AttachHandle(Timestamps, Base):
    __tablename__ = "attach_handles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    deployable_id: Mapped[int] = mapped_column(
        ForeignKey("deployables.id", ondelete="CASCADE"), index=True
    )
    attach_type: Mapped[str] = mapped_column(String(16))  # PCI | MDEV
    attach_info: Mapped[str] = mapped_column(String(255))
    in_use: Mapped[bool] = mapped_column(Boolean, default=False)

    deployable: Mapped[Deployable] = relationship(back_populates="attach_handles")


class Alarm(Base):
    __tablename__ = "alarms"
    __table_args__ = (
        # At most one active alarm per kind and subject, whoever raises it.
        Index(
            "uq_alarms_active",
            "kind",
            "subject",
            unique=True,
            sqlite_where=text(f"state = '{AlarmState.ACTIVE}'"),
            postgresql_where=text(f"state = '{AlarmState.ACTIVE}'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    kind: Mapped[AlarmKind] = mapped_column(StateColumn(AlarmKind, 64))
    subject: Mapped[str] = mapped_column(String(255))
    state: Mapped[AlarmState] = mapped_column(
        StateColumn(AlarmState, 16), default=AlarmState.ACTIVE, index=True
    )
    raised_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    cleared_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    message: Mapped[str] = mapped_column(Text)


class Conductor(Base):
    __tablename__ = "conductors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    endpoint: Mapped[str] = mapped_column(String(300))
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Each conductor says how long its record stays true without news (a few of its
    # heartbeats), so readers need not know its flags to tell whether it is alive.
    alive_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class DeviceProfile(Base):
    __tablename__ = "device_profiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    profile_json: Mapped[str] = mapped_column(Text)  # {"groups": [...]}, order kept
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class AcceleratorRequest(Base):
    """An ARQ: one accelerator asked for by one group of a device profile."""

    __tablename__ = "extended_accelerator_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    project_id: Mapped[str | None] = mapped_column(String(255), index=True)
    state: Mapped[ArqState] = mapped_column(StateColumn(ArqState, 16), default=ArqState.INITIAL)
    device_profile_id: Mapped[int] = mapped_column(
        ForeignKey("device_profiles.id", ondelete="RESTRICT"), index=True
    )
    device_profile_group_id: Mapped[int] = mapped_column(Integer)
    hostname: Mapped[str | None] = mapped_column(String(255))
    device_rp_uuid: Mapped[str | None] = mapped_column(String(36))
    instance_uuid: Mapped[str | None] = mapped_column(String(36), index=True)
    attach_handle_id: Mapped[int | None] = mapped_column(
        ForeignKey("attach_handles.id", ondelete="SET NULL"), unique=True
    )
    deployable_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployables.id", ondelete="SET NULL")
    )
    bind_failure: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    device_profile: Mapped[DeviceProfile] = relationship()
    attach_handle: Mapped[AttachHandle | None] = relationship()

    def resolved_as(self, hostname: str, device_rp_uuid: str, instance_uuid: str) -> bool:
        """Whether a bind to exactly this place was already resolved (Bound or
        BindFailed): the conductor answers a repeated bind with it, and the api reads
        it to learn what became of a bind whose answer was lost."""
        where = (self.hostname, self.device_rp_uuid, self.instance_uuid)
        asked = (hostname, device_rp_uuid, instance_uuid)
        return self.state in ARQ_BIND_OUTCOMES and where == asked


class PlacementNode(Base):
    """What accel last reported to Placement for one node, and what is still to do.

    ``providers_json`` maps each provider accel made under the node's root to what it
    last left there (its generation and the digests of its inventory and traits): a
    provider whose generation moved was touched by someone else and is read again.
    A node is reported by one conductor at a time (``owner`` until ``lease_until``).
    """

    __tablename__ = "placement_nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(255), unique=True)
    root_uuid: Mapped[str | None] = mapped_column(String(36))
    # The digest of the tree last reported whole; None: never reported.
    reported_digest: Mapped[str | None] = mapped_column(String(64))
    providers_json: Mapped[str] = mapped_column(Text, default="{}")
    pending: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    reported_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    checked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    next_try_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    owner: Mapped[str | None] = mapped_column(String(255))
    lease_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


# The partial index's predicate: the unfinished states, spelled in SQL.
_UNFINISHED = "(" + ", ".join(f"'{state}'" for state in OPERATION_UNFINISHED) + ")"


class Operation(Base):
    """A setup action asked for through the API and run on a node by its driver."""

    __tablename__ = "operations"
    __table_args__ = (
        # One unfinished operation per device at a time, whichever api or conductor asks.
        Index(
            "uq_operations_active_device",
            "device_id",
            unique=True,
            sqlite_where=text(f"state IN {_UNFINISHED}"),
            postgresql_where=text(f"state IN {_UNFINISHED}"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    device_id: Mapped[int | None] = mapped_column(
        ForeignKey("devices.id", ondelete="SET NULL"), index=True
    )
    device_uuid: Mapped[str] = mapped_column(String(36), index=True)
    deployable_uuid: Mapped[str | None] = mapped_column(String(36))
    agent_name: Mapped[str] = mapped_column(String(255))
    address: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    params_json: Mapped[str] = mapped_column(Text)  # the setup action as the API took it
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[OperationState] = mapped_column(
        StateColumn(OperationState, 16), default=OperationState.PENDING, index=True
    )
    steps_json: Mapped[str] = mapped_column(Text, default="[]")
    error: Mapped[str | None] = mapped_column(Text)
    reboot_required: Mapped[bool] = mapped_column(Boolean, default=False)
    requested_by: Mapped[str | None] = mapped_column(String(255))
    project_id: Mapped[str | None] = mapped_column(String(255))
    conductor: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class NovaEvent(Base):
    """An outbox row: one POST of accelerator-request-bound events for an instance,
    written in the bind's transaction and sent after its commit (accel.conductor.nova_events)."""

    __tablename__ = "nova_events"
    __table_args__ = (Index("ix_nova_events_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_uuid: Mapped[str] = mapped_column(String(36))
    events_json: Mapped[str] = mapped_column(Text)  # [[arq uuid, "completed"|"failed"], ...]
    state: Mapped[NovaEventState] = mapped_column(
        StateColumn(NovaEventState, 16), default=NovaEventState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When a conductor may (next) send it; a claim moves it on by the claim's length.
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
