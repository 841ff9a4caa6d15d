"""The public API's answers as pydantic models: Cyborg's shapes and accel's additions.

They are the schemas of openapi.json (accel.api.openapi), so the document and the
fuzz tests (tests/api/test_fuzz.py, schemathesis) check every answer field by field.
``MODELS`` lists those the document names.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Link(Shape):
    href: str
    rel: str


class HealthCheck(Shape):
    check: str
    severity: str
    value: str
    first_seen: str
    last_seen: str
    count: int
    latch: bool = False


class Health(Shape):
    state: str
    since: str | None
    checks: list[HealthCheck]
    reason: str
    latched_by: str | None = None
    latched_at: str | None = None
    cleared_at: str | None = None
    failed_functions: list[str] | None = None
    held_by_brake: bool | None = None


class ClearedHealth(Shape):
    uuid: str
    health: Health


class ConfirmedFailures(Shape):
    taken_out_of_service: int


class Device(Shape):
    uuid: str
    type: str
    vendor: str
    model: str
    std_board_info: str | None
    vendor_board_info: str | None
    hostname: str
    status: str | None = None
    created_at: str | None
    updated_at: str | None
    links: list[Link]
    health: Health


class Deployable(Shape):
    uuid: str
    parent_id: int | None
    root_id: int | None
    name: str
    num_accelerators: int
    device_id: int
    rp_uuid: str | None
    driver_name: str | None
    bitstream_id: str | None
    attributes_list: str
    created_at: str | None
    updated_at: str | None
    links: list[Link]


class Attribute(Shape):
    uuid: str
    deployable_id: int
    key: str
    value: str
    created_at: str | None
    updated_at: str | None
    links: list[Link]


class DeviceProfile(Shape):
    uuid: str
    name: str
    description: str | None
    groups: list[dict[str, str]]
    created_at: str | None
    updated_at: str | None
    links: list[Link]


class AcceleratorRequest(Shape):
    uuid: str
    state: str
    device_profile_name: str
    device_profile_group_id: int
    hostname: str | None
    device_rp_uuid: str | None
    instance_uuid: str | None
    project_id: str | None
    attach_handle_type: str
    attach_handle_uuid: str | None
    attach_handle_info: dict[str, str]
    bind_failure_reason: str | None = None
    created_at: str | None
    updated_at: str | None
    links: list[Link]


class Agent(Shape):
    name: str
    endpoint: str
    state: str
    last_seen: str
    last_synced_at: str | None
    last_sync_error: str | None
    internal_version: str | None
    created_at: str | None


class Alarm(Shape):
    uuid: str
    kind: str
    subject: str
    state: str
    raised_at: str | None
    cleared_at: str | None
    message: str


class Devices(Shape):
    devices: list[Device]


class Deployables(Shape):
    deployables: list[Deployable]


class Attributes(Shape):
    attributes: list[Attribute]


class DeviceProfiles(Shape):
    device_profiles: list[DeviceProfile]


class OneDeviceProfile(Shape):
    device_profile: DeviceProfile


class AcceleratorRequests(Shape):
    arqs: list[AcceleratorRequest]


class Agents(Shape):
    agents: list[Agent]


class Alarms(Shape):
    alarms: list[Alarm]


class PlacementNode(Shape):
    node: str
    root_uuid: str | None
    providers: int
    held_by_allocations: list[str]
    pending: bool
    reported_at: str | None
    checked_at: str | None
    next_try_at: str | None
    failures: int
    last_error: str | None


class PlacementStatus(Shape):
    nodes: list[PlacementNode]


class Operation(Shape):
    uuid: str
    device_uuid: str
    deployable_uuid: str | None
    hostname: str
    address: str
    kind: str
    action: str
    params: dict[str, Any]
    dry_run: bool
    state: str
    steps: list[str]
    error: str | None
    reboot_required: bool
    requested_by: str | None
    created_at: str
    updated_at: str | None
    finished_at: str | None
    links: list[Link]


class OneOperation(Shape):
    operation: Operation


class Operations(Shape):
    operations: list[Operation]


class ProgrammedDeployable(Deployable):
    operation: Operation


class Hardware(Shape):
    hardware: list[dict[str, Any]]


class Conductor(Shape):
    name: str
    endpoint: str
    started_at: str | None
    last_seen: str | None
    alive_until: str | None
    alive: bool
    sync_leases: list[str]
    synced_agents: list[str]


class Conductors(Shape):
    conductors: list[Conductor]


class NewAttribute(Shape):
    deployable_id: int
    key: str = Field(min_length=1, max_length=255)
    value: str = Field(max_length=4096)


class NewRequests(Shape):
    device_profile_name: str


MODELS: list[type[BaseModel]] = [
    Link,
    HealthCheck,
    Health,
    ClearedHealth,
    ConfirmedFailures,
    Operation,
    OneOperation,
    Operations,
    ProgrammedDeployable,
    Device,
    Deployable,
    Attribute,
    DeviceProfile,
    AcceleratorRequest,
    Agent,
    Alarm,
    Devices,
    Deployables,
    Attributes,
    DeviceProfiles,
    OneDeviceProfile,
    AcceleratorRequests,
    Agents,
    Alarms,
    Hardware,
    Conductor,
    Conductors,
    NewAttribute,
    NewRequests,
]
