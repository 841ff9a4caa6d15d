"""Wire schemas of the setup call (internal minor version 1.3).

Setup turns hardware into accelerators: enable SR-IOV virtual functions, program an
FPGA, switch a GPU's MIG mode or carve a MIG instance. The conductor names an
operation and sends a ``SetupCall`` down the chain conductor -> agent -> driver
(``POST /v1/setup``); the driver that owns the hardware runs it in the background
and every hop answers ``SetupProgress``, which callers poll with
``GET /v1/setup/{operation}`` until its state is final (DONE or FAILED).

The request names what to do, never how: which tool programs an FPGA, and where
bitstreams may come from, is the driver's configuration, not the caller's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import Field

from accel.internal.schemas import Kind, LenientBody, StrictBody
from accel.states import OperationState

PCI_ADDRESS = r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$"
# A bitstream is named by a plain file name inside the driver's bitstream folder.
BITSTREAM_NAME = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$"
# NVIDIA's MIG profile names: 1g.10gb, 2g.20gb, 3g.40gb, 4g.40gb, 7g.80gb, 1g.20gb...
MIG_PROFILE = r"^[1-7]g\.[0-9]{1,4}gb(\+me)?$"


class EnableVfs(StrictBody):
    """Set a physical function's SR-IOV virtual functions to ``num_vfs`` (0 removes them)."""

    action: Literal["enable_vfs"]
    num_vfs: int = Field(ge=0, le=4096)
    bind_vfio: bool = Field(
        default=False, description="Bind the new VFs to vfio-pci through driver_override."
    )


class ProgramFpga(StrictBody):
    """Load a bitstream from the driver's bitstream folder with its configured tool."""

    action: Literal["program"]
    bitstream: str = Field(pattern=BITSTREAM_NAME)


class SetMigMode(StrictBody):
    """Turn a GPU's MIG mode on or off (may need a GPU reset: reboot_required)."""

    action: Literal["mig_mode"]
    enabled: bool


class CreateMigInstance(StrictBody):
    """Carve one GPU instance (and its compute instance) of a MIG profile."""

    action: Literal["create_mig_instance"]
    profile: str = Field(pattern=MIG_PROFILE)


SetupAction = Annotated[
    EnableVfs | ProgramFpga | SetMigMode | CreateMigInstance,
    Field(discriminator="action"),
]


class SetupCall(StrictBody):
    """What the conductor asks a node to do; the same operation twice is run once."""

    operation: UUID
    kind: Kind
    address: str = Field(pattern=PCI_ADDRESS)
    setup: SetupAction
    dry_run: bool = Field(
        default=False, description="Check and say what would be done, change nothing."
    )


class SetupProgress(LenientBody):
    """Where an operation stands, as the driver that runs it reports."""

    operation: UUID
    state: OperationState
    steps: list[str] = Field(default_factory=list)  # done, or for a dry run: to be done
    error: str | None = None
    reboot_required: bool = False


class OperationRequest(StrictBody):
    """What the api asks a conductor (``POST /v1/operations``): set up one device."""

    device_uuid: UUID
    deployable_uuid: UUID | None = None
    setup: SetupAction
    dry_run: bool = False
    requested_by: str | None = Field(default=None, max_length=255)
    project_id: str | None = Field(default=None, max_length=255)


class OperationView(LenientBody):
    """An operation as the public API shows it (``GET /v2/operations/{uuid}``)."""

    uuid: UUID
    device_uuid: UUID
    deployable_uuid: UUID | None = None
    hostname: str
    address: str
    kind: Kind
    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    dry_run: bool = False
    state: OperationState
    steps: list[str] = Field(default_factory=list)
    error: str | None = None
    reboot_required: bool = False
    requested_by: str | None = None
    created_at: datetime
    updated_at: datetime | None = None
    finished_at: datetime | None = None
