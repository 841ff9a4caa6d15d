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
  (``POST /v1/accelerator_requests``).
* 1.3: the setup call, conductor -> agent -> driver (``POST /v1/setup``,
  ``GET /v1/setup/{operation}``); its bodies are in setup_schemas.py.

Request bodies are strict (unknown fields are refused); answers read from peers are
lenient, so a newer peer's additions never break an older reader.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, field_validator

# An ETag of ours is a quoted 40-digit hash; anything much longer is not one (and
# agents.inventory_etag holds 80).
MAX_ETAG_LENGTH = 80


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


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


# Every heartbeat's endpoint is checked twice (its body, its origin); a fleet's are
# few and repeat, and parsing them again cost a tenth of a conductor's heartbeat.
@functools.lru_cache(maxsize=1 << 16)
def split_endpoint(endpoint: str) -> tuple[str, int]:
    """Splits ``host:port`` (IPv6 in brackets) and checks both halves."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", endpoint)
    if match is None:
        raise ValueError("must be host:port (IPv6 as [addr]:port)")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise ValueError("port must be between 1 and 65535")
    if match.group(1) is not None:
        ipaddress.IPv6Address(host)
    elif not _is_ipv4(host) and not _HOSTNAME.match(host):
        raise ValueError(f"{host!r} is neither an IP address nor a hostname")
    return host, port


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


class StrictBody(BaseModel):
    """A request body: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class LenientBody(BaseModel):
    """An answer read from a peer: fields it adds in a newer version are ignored."""

    model_config = ConfigDict(extra="ignore")


def _checked_endpoint(value: str) -> str:
    split_endpoint(value)
    return value


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
    name: str | None = Field(
        default=None, min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._-]+$"
    )
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
    num: int = Field(ge=0)
    device_type: Kind
    acc_capability: dict[str, Any] = Field(default_factory=dict)

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

    address: str
    vendor_id: str
    product_id: str
    class_code: str
    subsystem_vendor_id: str | None = None
    subsystem_product_id: str | None = None
    revision: str | None = None
    vendor_name: str | None = None
    product_name: str | None = None
    subsystem_name: str | None = None
    class_name: str | None = None
    numa_node: int | None = None
    local_cpulist: str | None = None
    driver: str | None = None
    iommu_group: int | None = None
    current_link_speed: str | None = None
    max_link_speed: str | None = None
    current_link_width: str | None = None
    max_link_width: str | None = None


class MdevType(LenientBody):
    """One mediated-device type a function offers (``mdev_supported_types/<type_id>``)."""

    type_id: str
    name: str | None = None
    description: str | None = None
    device_api: str | None = None
    available_instances: int | None = None
    instances: int = 0


class MigInstance(LenientBody):
    uuid: str | None = None
    memory_total_mib: int | None = None


class GpuFacts(LenientBody):
    """What NVIDIA's management library adds to sysfs, where it is present."""

    gpu_uuid: str | None = None
    # The driver's own name for the card ("NVIDIA H200"): known even where the PCI ID
    # database is older than the card and names only its numbers.
    name: str | None = None
    serial: str | None = None
    memory_total_mib: int | None = None
    compute_capability: str | None = None
    driver_version: str | None = None
    mig_mode: Literal["enabled", "disabled"] | None = None
    mig_instances: list[MigInstance] = Field(default_factory=list)


class QatFacts(LenientBody):
    services: list[str] = Field(default_factory=list)  # sym, asym, dc
    state: str | None = None


class FpgaFacts(LenientBody):
    interface_id: str | None = None  # the region's interface: which bitstreams fit
    afu_ids: list[str] = Field(default_factory=list)  # loaded accelerator functions
    regions: list[str] = Field(default_factory=list)


class NetworkFacts(LenientBody):
    interfaces: list[str] = Field(default_factory=list)
    phys_switch_id: str | None = None  # set when the eswitch is in switchdev mode


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
    virtual_functions: list[PciFunctionFacts] = Field(default_factory=list)
    # Other functions of the same card (an Alveo's management and user functions).
    sibling_functions: list[PciFunctionFacts] = Field(default_factory=list)
    mdev_types: list[MdevType] = Field(default_factory=list)
    gpu: GpuFacts | None = None
    qat: QatFacts | None = None
    fpga: FpgaFacts | None = None
    network: NetworkFacts | None = None

    def wire(self, version: tuple[int, int]) -> dict[str, Any]:
        """The entry as a peer speaking ``version`` expects it."""
        if version < (1, 1):
            return self.model_dump(mode="json", include={"uuid", "acc_specs", "acc_status"})
        document = self.model_dump(mode="json", exclude_none=True)
        return {key: value for key, value in document.items() if value != []}


class DriverOutcome(LenientBody):
    """How one driver fared in an agent's discovery."""

    type: Kind
    endpoint: str
    state: Literal["ok", "failed"]
    error: str | None = None


class HardwareList(LenientBody):
    hardware: list[HardwareEntry]
    generation: int | None = None
    drivers: list[DriverOutcome] | None = None

    @property
    def complete(self) -> bool:
        """No driver failed: every kind the node has is in the report."""
        return all(outcome.state == "ok" for outcome in self.drivers or [])


class ArqBinding(StrictBody):
    """Bind one accelerator request where the caller (Nova) placed it."""

    arq_uuid: UUID
    hostname: str = Field(min_length=1, max_length=255)
    device_rp_uuid: UUID
    instance_uuid: UUID
    project_id: str | None = Field(default=None, max_length=255)


# The header of a change's deadline: the conductor commits nothing after this time of
# the database's clock, in seconds since 1970 (accel.db.commit_deadline).
COMMIT_BEFORE = "Accel-Commit-Before"


class ArqChanges(StrictBody):
    bind: list[ArqBinding] = Field(default_factory=list, max_length=1000)
    unbind: list[UUID] = Field(default_factory=list, max_length=1000)
    delete: list[UUID] = Field(default_factory=list, max_length=1000)


class ArqOutcome(LenientBody):
    uuid: str
    state: str
    reason: str | None = None
    refused: bool = False  # not found, or in a state that cannot change so


class ArqOutcomes(LenientBody):
    arqs: list[ArqOutcome]
