"""NVIDIA's management library (NVML), where present, adds what sysfs cannot say.

The GPU's own uuid, name and serial, its memory, compute capability, the driver version
and MIG mode with its instances. The library comes from the optional extra
``nvidia-ml-py`` (module ``pynvml``) and needs NVIDIA's driver; without either, a
GPU is described from sysfs alone. Tests inject a fake library object with the same
functions, so this layer is tested without a GPU and without mocking sysfs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from accel.internal.schemas import GpuFacts, Kind, MigInstance

log = logging.getLogger(__name__)

MIG_ENABLED = 1  # NVML_DEVICE_MIG_ENABLE
MIG_DISABLED = 0  # NVML_DEVICE_MIG_DISABLE
MIB = 1 << 20
Value = TypeVar("Value")


class NvmlLibrary(Protocol):
    """The part of pynvml's module-level API that discovery and MIG setup use.

    Names and arguments are pynvml's own, so the module itself satisfies this.
    """

    NVMLError: type[Exception]
    NVML_GPU_INSTANCE_PROFILE_COUNT: int
    NVML_COMPUTE_INSTANCE_PROFILE_COUNT: int
    NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED: int

    def nvmlSystemGetDriverVersion(self) -> str | bytes: ...
    def nvmlDeviceGetHandleByPciBusId(self, bus_id: str) -> Any: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetSerial(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]: ...
    def nvmlDeviceGetMigMode(self, handle: Any) -> tuple[int, int]: ...
    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int: ...
    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> Any: ...

    # MIG setup (accel.driver.setup.mig); profile infos are pynvml's v2 structures.
    def nvmlDeviceSetMigMode(self, handle: Any, mode: int) -> int: ...
    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: Any, profile: int) -> Any: ...
    def nvmlDeviceGetGpuInstanceRemainingCapacity(self, handle: Any, profileId: int) -> int: ...
    def nvmlDeviceCreateGpuInstance(self, handle: Any, profileId: int) -> Any: ...
    def nvmlGpuInstanceGetInfo(self, gpuInstance: Any) -> Any: ...
    def nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self, gpuInstance: Any, profile: int, engProfile: int
    ) -> Any: ...
    def nvmlGpuInstanceCreateComputeInstance(self, gpuInstance: Any, profileId: int) -> Any: ...
    def nvmlGpuInstanceDestroy(self, gpuInstance: Any) -> None: ...


def nvml_for(kind: Kind, sysfs_root: Path, wanted: bool = True) -> NvmlLibrary | None:
    """NVML for a GPU driver reading this machine's own /sys; None for any other
    driver, and for a fake tree, whose GPUs are not this machine's."""
    if wanted and kind is Kind.GPU and sysfs_root.resolve() == Path("/"):
        return load_nvml()
    return None


def load_nvml() -> NvmlLibrary | None:
    """pynvml, initialised, or None where the library or NVIDIA's driver is missing."""
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
        log.info("NVML is installed but not usable here: %s", exc)
        return None
    library: NvmlLibrary = pynvml
    return library


def as_text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvidiaFacts:
    """Reads one GPU's facts through NVML; any single query may fail on its own."""

    def __init__(self, library: NvmlLibrary) -> None:
        self.library = library

    def _ask(self, query: Callable[[], Value]) -> Value | None:
        try:
            return query()
        except self.library.NVMLError:
            return None

    def facts(self, pci_address: str) -> GpuFacts | None:
        nvml = self.library
        handle = self._ask(lambda: nvml.nvmlDeviceGetHandleByPciBusId(pci_address))
        if handle is None:
            return None
        memory = self._ask(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        capability = self._ask(lambda: nvml.nvmlDeviceGetCudaComputeCapability(handle))
        mig = self._ask(lambda: nvml.nvmlDeviceGetMigMode(handle))
        uuid = self._ask(lambda: nvml.nvmlDeviceGetUUID(handle))
        name = self._ask(lambda: nvml.nvmlDeviceGetName(handle))
        serial = self._ask(lambda: nvml.nvmlDeviceGetSerial(handle))
        driver = self._ask(nvml.nvmlSystemGetDriverVersion)
        return GpuFacts(
            gpu_uuid=None if uuid is None else as_text(uuid),
            name=None if name is None else as_text(name),
            serial=None if serial is None else as_text(serial),
            memory_total_mib=None if memory is None else int(memory.total) // MIB,
            compute_capability=None if capability is None else "{}.{}".format(*capability),
            driver_version=None if driver is None else as_text(driver),
            mig_mode=None if mig is None else ("enabled" if mig[0] == MIG_ENABLED else "disabled"),
            mig_instances=self._mig_instances(handle) if mig and mig[0] == MIG_ENABLED else [],
        )

    def _mig_instances(self, handle: Any) -> list[MigInstance]:
        nvml = self.library
        instances = []
        for index in range(self._ask(lambda: nvml.nvmlDeviceGetMaxMigDeviceCount(handle)) or 0):
            mig = self._ask(partial(nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, index))
            if mig is None:
                continue  # no instance in this slot
            uuid = self._ask(partial(nvml.nvmlDeviceGetUUID, mig))
            memory = self._ask(partial(nvml.nvmlDeviceGetMemoryInfo, mig))
            instances.append(
                MigInstance(
                    uuid=None if uuid is None else as_text(uuid),
                    memory_total_mib=None if memory is None else int(memory.total) // MIB,
                )
            )
        return instances
