"""Whether accel hands a device out: the one rule that binds and Placement share.

A bind refuses what this refuses, and Placement is told ``reserved = total`` for it,
so Nova's scheduler never picks what accel would then refuse.
"""

from __future__ import annotations

from accel.states import AgentState, DeviceStatus


def why_not_offered(
    *,
    uuid: str,
    hostname: str,
    present: bool,
    status: DeviceStatus | str,
    setup_required: bool,
    reboot_required: bool,
    agent_state: AgentState | str,
) -> str | None:
    """Why the device is not handed out now, or None if it is."""
    if not present:
        return f"device {uuid} has vanished"
    if status != DeviceStatus.ENABLED:
        return f"device {uuid} is in maintenance"
    if setup_required or reboot_required:
        return f"device {uuid} needs setup or a reboot before use"
    if agent_state != AgentState.UP:
        return f"the agent of host {hostname} is DOWN"
    return None


def why_not_whole_gpu(
    rc: str, deployable_name: str, hostname: str, address: str | None
) -> str | None:
    """A GPU's SR-IOV virtual function is never offered as a whole GPU (``PGPU``).

    A deployable of a GPU with VFs is named after the VF's address, not the device's
    (``hardware_rows.plan_deployables``): Cyborg offered each VF as a free PGPU and
    Nova handed out cards that were in use (research: Cyborg bug 9, 10).
    """
    if rc != "PGPU" or address is None or deployable_name == f"{hostname}_{address}":
        return None
    return f"{deployable_name} is a virtual function of GPU {address}, not a whole GPU"
