"""NVIDIA MIG through NVML: switch a GPU's MIG mode, carve a GPU instance of a profile.

Turning MIG on or off is *pending* until the GPU is reset (NVML reports current and
pending modes apart): the operation then finishes DONE with ``reboot_required``,
because the GPU is not usable as asked until someone resets it.

A MIG profile is asked for by NVIDIA's name (``1g.10gb``); which NVML profile id that
is differs between GPU models, so the GPU itself is asked: every GPU-instance profile
it offers, with its name. The new GPU instance gets one compute instance spanning
all of its slices, which is what ``nvidia-smi mig -cgi 1g.10gb -C`` does too.

Every NVML call blocks, so both checking and running happen in worker threads.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread

from accel.driver.nvml import MIG_DISABLED, MIG_ENABLED, NvmlLibrary, as_text
from accel.driver.setup.common import Plan, Progress, Runner, SetupFailed
from accel.errors import InvalidInput
from accel.internal.setup_schemas import CreateMigInstance, SetMigMode

PENDING_NOTE = "the change is pending: reset the GPU (nvidia-smi -r) or reboot the node"


def _mode_name(mode: int) -> str:
    return "enabled" if mode == MIG_ENABLED else "disabled"


def _handle(nvml: NvmlLibrary, address: str) -> Any:
    try:
        return nvml.nvmlDeviceGetHandleByPciBusId(address)
    except nvml.NVMLError as exc:
        raise InvalidInput(f"NVML does not know a GPU at {address}: {exc}") from exc


def _mig_mode(nvml: NvmlLibrary, handle: Any, address: str) -> tuple[int, int]:
    try:
        current, pending = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError as exc:
        raise InvalidInput(f"the GPU at {address} does not support MIG: {exc}") from exc
    return int(current), int(pending)


def plan_mig_mode(nvml: NvmlLibrary, address: str, request: SetMigMode) -> Plan:
    handle = _handle(nvml, address)
    current, pending = _mig_mode(nvml, handle, address)
    wanted = MIG_ENABLED if request.enabled else MIG_DISABLED
    name = _mode_name(wanted)
    if current == wanted and pending == wanted:
        unchanged = f"MIG mode of {address} is already {name}: nothing to change"
        return Plan([unchanged], _record(unchanged), changes=False)
    if pending == wanted:
        # Asked before and not yet in force: setting it again would change nothing.
        waiting = f"MIG mode of {address} is already set to {name}, pending a GPU reset"
        return Plan([waiting], _record(waiting, reboot_required=True), changes=False)
    step = f"set MIG mode of {address} to {name}"

    def apply(progress: Progress) -> None:
        try:
            nvml.nvmlDeviceSetMigMode(handle, wanted)
            now, later = nvml.nvmlDeviceGetMigMode(handle)
        except nvml.NVMLError as exc:
            raise SetupFailed(f"NVML could not set MIG mode of {address} to {name}: {exc}") from exc
        progress.done(step)
        if int(now) != int(later):
            progress.reboot_required = True
            progress.done(PENDING_NOTE)

    async def run(progress: Progress) -> None:
        await anyio.to_thread.run_sync(apply, progress)

    return Plan([step], run)


def _record(step: str, reboot_required: bool = False) -> Runner:
    """A run that changes nothing and says so."""

    async def run(progress: Progress) -> None:
        progress.done(step)
        progress.reboot_required = progress.reboot_required or reboot_required

    return run


def gpu_instance_profiles(nvml: NvmlLibrary, handle: Any) -> dict[str, Any]:
    """NVIDIA's profile name (``1g.10gb``) -> NVML's profile info, for what this GPU offers."""
    profiles: dict[str, Any] = {}
    for index in range(nvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, index)
        except nvml.NVMLError:
            continue  # a profile this GPU does not offer
        name = as_text(getattr(info, "name", b"") or b"").strip()
        name = name.removeprefix("MIG ").strip()  # NVML says "MIG 1g.10gb"
        if name:
            profiles.setdefault(name, info)
    return profiles


def plan_mig_instance(nvml: NvmlLibrary, address: str, request: CreateMigInstance) -> Plan:
    handle = _handle(nvml, address)
    current, pending = _mig_mode(nvml, handle, address)
    if current != MIG_ENABLED:
        note = " (it is pending: the GPU needs a reset)" if pending == MIG_ENABLED else ""
        raise InvalidInput(f"MIG mode is not enabled on {address}{note}")
    profiles = gpu_instance_profiles(nvml, handle)
    info = profiles.get(request.profile)
    if info is None:
        offered = ", ".join(sorted(profiles)) or "none"
        raise InvalidInput(
            f"{address} offers no MIG profile {request.profile}; it offers {offered}"
        )
    try:
        room = nvml.nvmlDeviceGetGpuInstanceRemainingCapacity(handle, info.id)
    except nvml.NVMLError:
        room = None  # unknown: creating it will say
    if room == 0:
        raise InvalidInput(f"{address} has no room left for another {request.profile} instance")
    create_gpu = f"create a GPU instance of profile {request.profile} (NVML profile {info.id})"
    create_compute = f"create a compute instance spanning its {info.sliceCount} slice(s)"

    def apply(progress: Progress) -> None:
        try:
            instance = nvml.nvmlDeviceCreateGpuInstance(handle, info.id)
        except nvml.NVMLError as exc:
            raise SetupFailed(
                f"NVML could not create a {request.profile} GPU instance on {address}: {exc}"
            ) from exc
        progress.done(f"{create_gpu}: GPU instance {_instance_id(nvml, instance)}")
        try:
            compute = _compute_profile(nvml, instance, int(info.sliceCount))
            nvml.nvmlGpuInstanceCreateComputeInstance(instance, compute)
        except (nvml.NVMLError, SetupFailed) as exc:
            # A GPU instance without compute is of no use to anyone: take it back.
            try:
                nvml.nvmlGpuInstanceDestroy(instance)
            except nvml.NVMLError as destroy_error:
                progress.done(f"could not destroy the new GPU instance: {destroy_error}")
            else:
                progress.done("destroyed the new GPU instance again")
            raise SetupFailed(f"no compute instance for the new GPU instance: {exc}") from exc
        progress.done(f"{create_compute}: NVML compute profile {compute}")

    async def run(progress: Progress) -> None:
        await anyio.to_thread.run_sync(apply, progress)

    return Plan([f"{create_gpu} on {address}", create_compute], run)


def _instance_id(nvml: NvmlLibrary, instance: Any) -> str:
    try:
        return str(nvml.nvmlGpuInstanceGetInfo(instance).id)
    except nvml.NVMLError:
        return "(id unknown)"


def _compute_profile(nvml: NvmlLibrary, instance: Any, slices: int) -> int:
    """The compute-instance profile that spans all of a GPU instance's slices."""
    for index in range(nvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
        try:
            info = nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                instance, index, nvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
            )
        except nvml.NVMLError:
            continue
        if int(info.sliceCount) == slices:
            return int(info.id)
    raise SetupFailed(f"no compute instance profile spans {slices} slice(s)")
