"""Wire schemas of the internal API v1, the seed's bodies made precise.

History of the minor versions (each component speaks a range, see versions.py):

* 1.0: the seed. Hello ``{"status", "endpoint", "type"?}``; discovery answers
  ``{"status": "IN-PROGRESS"}``; hardware entries carry ``uuid``, ``acc_specs`` and
  ``acc_status`` only.
* 1.1: hardware entries add PCI facts (``pci``, ``sriov``, ``virtual_functions``,
  ``sibling_functions``, ``mdev_types``) and per-kind facts (``gpu``, ``qat``,
  ``fpga``, ``network``);
  discovery and hardware answers carry a ``generation`` so a caller can wait for a
  discovery it started (``GET /v1/hardware?min_generation=N&wait=S``); an agent's
  hardware answer reports each driver's outcome in ``drivers``; an agent's hello
  names the node in ``name`` and asks for a sync now with ``resync``.
* 1.2: the conductor binds and unbinds accelerator requests for the api
  (``POST /v1/accelerator_requests``); its bodies are in arq_schemas.py.
* 1.3: the setup call, conductor -> agent -> driver (``POST /v1/setup``,
  ``GET /v1/setup/{operation}``); its bodies are in setup_schemas.py.
* 1.4: a discovery may wait for its result (``POST /v1/discovery?wait=S``); ETags.
* 1.5: an agent's hello carries its node's hardware ETag.
* 1.6: hardware entries and their virtual functions carry ``health``
  (health_schemas.py); an older peer gets them without it.

Request bodies are strict (unknown fields are refused); answers read from peers are
lenient, so a newer peer's additions never break an older reader.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from accel.internal.endpoints import NODE_NAME_PATTERN, canonical_endpoint
from accel.internal.health_schemas import DeviceHealth
from accel.internal.versions import Feature, Version
from accel.web.json_bodies import depth

# An ETag of ours is a quoted 40-digit hash; anything much longer is not one (and
# agents.inventory_etag holds 80).
MAX_ETAG_LENGTH = 80

# Bounds on hardware reports, at every hop (see docs/operations.md). The densest real
# nodes hold 8 to 16 GPUs, or a few dozen QAT or NIC functions of one kind (VFs travel
# inside their physical function's entry, not as entries), so 1,024 entries per driver
# is some 16 times the most any node has. It also bounds how long one node's store
# holds SQLite's write lock, and so how long other nodes' heartbeats wait behind it
# (docs/benchmarks.md, "Hardware report bounds").
MAX_ENTRIES_PER_DRIVER = 1024
# Per node: one driver per kind.
MAX_ENTRIES_PER_NODE = MAX_ENTRIES_PER_DRIVER * 5
# A driver's answer: our largest entries (a NIC with its VFs) are about 3.5 kB, one
# with 256 VFs about 100 kB; 8 MiB holds 1,024 entries of 8 kB.
MAX_DRIVER_ANSWER_BYTES = 8 << 20
# An agent's answer: every kind's driver at its bound, plus the defaults the agent
# writes out in full (a driver may leave them out) and the drivers' outcomes.
MAX_AGENT_ANSWER_BYTES = 5 * MAX_DRIVER_ANSWER_BYTES + (1 << 20)
# What a driver's failure may say (an agent cuts longer reasons).
MAX_REASON_LENGTH = 1000

# Text inside a hardware entry: ids are a few hex digits, names a line of pci.ids.
Id = Annotated[str, Field(max_length=64)]
Text = Annotated[str, Field(max_length=255)]
PciAddress = Annotated[
    str, Field(max_length=16, pattern=r"^[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
]
MAX_CAPABILITY_BYTES = 16 << 10
# Attachable functions (attach handles) an entry and a report may make. A few numbers
# in a small report (a mediated-device type's instances) become as many rows: these
# bounds, not the answer's bytes, keep that in check. A real vGPU card offers at most
# a few dozen instances of each of some 20 types; a NIC node, 16 ports of 256 VFs.
MAX_MDEV_INSTANCES = 1024
MAX_ATTACHABLE_PER_ENTRY = 4096
MAX_ATTACHABLE_PER_DRIVER = 8192
MAX_ATTACHABLE_PER_NODE = MAX_ATTACHABLE_PER_DRIVER * 5
# A capability is a map of a few levels. A report is parsed by pydantic, which allows
# 200 levels, and every answer that carries it (an agent's, the api's /v2/hardware)
# wraps it in about six more: this keeps those within what accel's own bounded parser
# reads back (json_bodies.MAX_DEPTH), so one driver cannot make the fleet unreadable.
MAX_CAPABILITY_DEPTH = 16


class Kind(StrEnum):
    """Kinds of hardware, named as OpenStack Cyborg names device types."""

    GPU = "GPU"
    FPGA = "FPGA"
    QAT = "QAT"
    NIC = "NIC"
    AICHIP = "AICHIP"

    @classmethod
    def parse(cls, value: str) -> Kind:
        """Reads a kind case-insensitively; the seed's ``CRYPTO`` is Cyborg's QAT."""
        normalized = value.strip().upper()
        if normalized == "CRYPTO":
            return cls.QAT
        return cls(normalized)


class StrictBody(BaseModel):
    """A request body: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class LenientBody(BaseModel):
    """An answer read from a peer: fields it adds in a newer version are ignored."""

    model_config = ConfigDict(extra="ignore")


def _checked_endpoint(value: str) -> str:
    return canonical_endpoint(value)


# ``host:port`` of a component, as a hello names it.
Endpoint = Annotated[str, Field(max_length=300), AfterValidator(_checked_endpoint)]


class DriverHello(StrictBody):
    """A driver tells its agent it is up, where it listens and what it drives."""

    status: Literal["READY"]
    endpoint: Endpoint
    type: Kind

    @field_validator("type", mode="before")
    @classmethod
    def _kind(cls, value: Any) -> Any:
        return Kind.parse(value) if isinstance(value, str) else value


class AgentHello(StrictBody):
    """An agent tells a conductor it is up; repeated, it is the agent's heartbeat."""

    status: Literal["READY"]
    endpoint: Endpoint
    name: str | None = Field(default=None, min_length=1, max_length=253, pattern=NODE_NAME_PATTERN)
    # Set when the node's drivers changed since the last hello: please sync me now.
    resync: bool = False
    # 1.5: the ETag of the node's hardware answer, from a discovery the agent ran just
    # before this hello. The same as the stored one: nothing to sync; another: sync.
    inventory_etag: str | None = Field(default=None, min_length=1, max_length=MAX_ETAG_LENGTH)


class HelloAnswer(LenientBody):
    """What an agent or conductor answers to a hello."""

    status: str
    known: bool = False
    node: str | None = None
    # The newest internal version the answering peer speaks (sent since 1.5, whatever
    # the version asked): a caller that met it before an upgrade learns of it here.
    max_version: str | None = None


class DiscoveryStarted(LenientBody):
    status: Literal["IN-PROGRESS"] = "IN-PROGRESS"
    generation: int | None = None


class AccSpecs(LenientBody):
    remote: int = 0
    num: int = Field(ge=0, le=1 << 20)
    device_type: Kind
    acc_capability: dict[str, Any] = Field(default_factory=dict)

    @field_validator("acc_capability")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Free-form by the seed: bounded by its size, whatever its shape.
        if depth(value) > MAX_CAPABILITY_DEPTH:
            raise ValueError(f"acc_capability is nested deeper than {MAX_CAPABILITY_DEPTH} levels")
        if len(json.dumps(value)) > MAX_CAPABILITY_BYTES:
            raise ValueError(f"acc_capability is larger than {MAX_CAPABILITY_BYTES} bytes")
        return value

    @field_validator("device_type", mode="before")
    @classmethod
    def _kind(cls, value: Any) -> Any:
        return Kind.parse(value) if isinstance(value, str) else value


class AccStatus(LenientBody):
    setup_required: bool
    # The seed spells it "reboot_equired"; read either, always write it correctly.
    reboot_required: bool = Field(
        default=False, validation_alias=AliasChoices("reboot_required", "reboot_equired")
    )


class PciFunctionFacts(LenientBody):
    """What sysfs (and the PCI id database, for the names) says about one PCI function."""

    address: PciAddress
    vendor_id: Id
    product_id: Id
    class_code: Id
    subsystem_vendor_id: Id | None = None
    subsystem_product_id: Id | None = None
    revision: Id | None = None
    vendor_name: Text | None = None
    product_name: Text | None = None
    subsystem_name: Text | None = None
    class_name: Text | None = None
    numa_node: int | None = None
    local_cpulist: Annotated[str, Field(max_length=4096)] | None = None
    driver: Text | None = None
    iommu_group: int | None = None
    current_link_speed: Text | None = None
    max_link_speed: Text | None = None
    current_link_width: Id | None = None
    max_link_width: Id | None = None
    # 1.6, on a virtual function: its own health (a failed VF does not fail its PF).
    health: DeviceHealth | None = None


class MdevType(LenientBody):
    """One mediated-device type a function offers (``mdev_supported_types/<type_id>``)."""

    type_id: Id
    name: Text | None = None
    description: Annotated[str, Field(max_length=1024)] | None = None
    device_api: Text | None = None
    available_instances: int | None = Field(default=None, ge=0, le=MAX_MDEV_INSTANCES)
    instances: int = Field(default=0, ge=0, le=MAX_MDEV_INSTANCES)

    @property
    def units(self) -> int:
        """How many instances the type can hold: one attach handle each."""
        return (self.available_instances or 0) + self.instances


class MigInstance(LenientBody):
    uuid: Id | None = None
    memory_total_mib: int | None = None
    # 1.6: the instance's health, its GPU's fanned out with its own NVML evidence.
    health: DeviceHealth | None = None


class GpuFacts(LenientBody):
    """What NVIDIA's management library adds to sysfs, where it is present."""

    gpu_uuid: Id | None = None
    # The driver's own name for the card ("NVIDIA H200"): known even where the PCI ID
    # database is older than the card and names only its numbers.
    name: Text | None = None
    serial: Id | None = None
    memory_total_mib: int | None = None
    compute_capability: Id | None = None
    driver_version: Id | None = None
    mig_mode: Literal["enabled", "disabled"] | None = None
    mig_instances: list[MigInstance] = Field(default_factory=list, max_length=64)


class QatFacts(LenientBody):
    services: list[Id] = Field(default_factory=list, max_length=16)  # sym, asym, dc
    state: Id | None = None


class FpgaFacts(LenientBody):
    interface_id: Id | None = None  # the region's interface: which bitstreams fit
    afu_ids: list[Id] = Field(default_factory=list, max_length=64)  # loaded functions
    regions: list[Text] = Field(default_factory=list, max_length=64)


class NetworkFacts(LenientBody):
    interfaces: list[Text] = Field(default_factory=list, max_length=4096)
    phys_switch_id: Id | None = None  # set when the eswitch is in switchdev mode


class SriovFacts(LenientBody):
    total_vfs: int
    num_vfs: int


class HardwareEntry(LenientBody):
    """One physical device a driver sees, ready to use or not."""

    uuid: UUID
    acc_specs: AccSpecs
    acc_status: AccStatus
    pci: PciFunctionFacts | None = None
    sriov: SriovFacts | None = None
    # PCI allows 65,535 VFs; no device offers more than a few thousand.
    virtual_functions: list[PciFunctionFacts] = Field(default_factory=list, max_length=4096)
    # Other functions of the same card (an Alveo's management and user functions).
    sibling_functions: list[PciFunctionFacts] = Field(default_factory=list, max_length=64)
    mdev_types: list[MdevType] = Field(default_factory=list, max_length=256)
    gpu: GpuFacts | None = None
    qat: QatFacts | None = None
    fpga: FpgaFacts | None = None
    network: NetworkFacts | None = None
    # 1.6: what the driver's health checks read (None from a driver that has none).
    health: DeviceHealth | None = None

    @model_validator(mode="after")
    def _attachable_bounded(self) -> HardwareEntry:
        type_ids = [mdev.type_id for mdev in self.mdev_types]
        if len(set(type_ids)) != len(type_ids):
            # Each listing would make the same attach handles again.
            twice = next(t for t in type_ids if type_ids.count(t) > 1)
            raise ValueError(f"mediated-device type {twice} is listed twice")
        if self.attachable > MAX_ATTACHABLE_PER_ENTRY:
            raise ValueError(
                f"the entry's mediated-device instances and virtual functions come to "
                f"{self.attachable}, more than the {MAX_ATTACHABLE_PER_ENTRY} one device may have"
            )
        return self

    @property
    def attachable(self) -> int:
        """How many attach handles the entry makes (at least its own function)."""
        units = sum(mdev.units for mdev in self.mdev_types)
        return max(1, units + len(self.virtual_functions))

    def wire(self, version: Version) -> dict[str, Any]:
        """The entry as a peer speaking ``version`` expects it."""
        if not Feature.GENERATIONS.spoken_in(version):
            return self.model_dump(mode="json", include={"uuid", "acc_specs", "acc_status"})
        exclude: Any = None
        if not Feature.HEALTH.spoken_in(version):
            exclude = {
                "health": True,
                "virtual_functions": {"__all__": {"health"}},
                "gpu": {"mig_instances": {"__all__": {"health"}}},
            }
        document = self.model_dump(mode="json", exclude_none=True, exclude=exclude)
        return {key: value for key, value in document.items() if value != []}


class DriverOutcome(LenientBody):
    """How one driver fared in an agent's discovery."""

    type: Kind
    endpoint: Annotated[str, Field(max_length=300)]
    state: Literal["ok", "failed"]
    error: Annotated[str, Field(max_length=MAX_REASON_LENGTH)] | None = None


class HardwareList(LenientBody):
    hardware: list[HardwareEntry] = Field(max_length=MAX_ENTRIES_PER_NODE)
    # The name of the node's compute-node provider in Placement, where it is not the
    # node's own (Nova often knows a node by its FQDN); an agent's answer only. A
    # conductor that does not know the field ignores it, as it ignores any.
    resource_provider_name: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    generation: int | None = None
    drivers: list[DriverOutcome] | None = Field(default=None, max_length=len(Kind))

    @model_validator(mode="after")
    def _attachable_bounded(self) -> HardwareList:
        total = sum(entry.attachable for entry in self.hardware)
        if total > MAX_ATTACHABLE_PER_NODE:
            raise ValueError(
                f"the report's entries make {total} attach handles, more than the "
                f"{MAX_ATTACHABLE_PER_NODE} one node may have"
            )
        return self

    @property
    def complete(self) -> bool:
        """No driver failed: every kind the node has is in the report."""
        return all(outcome.state == "ok" for outcome in self.drivers or [])


# The header of a change's deadline: the conductor commits nothing after this time of
# the database's clock, in seconds since 1970 (accel.db.commit_deadline).
COMMIT_BEFORE = "Accel-Commit-Before"
